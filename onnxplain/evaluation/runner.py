"""``onnxplain evaluate``: every method against every metric, on images with labels and masks.

One :class:`~onnxplain.runtime.explainer.Explainer` explains the images with each method; the metrics of
:mod:`onnxplain.evaluation.metrics` score the maps. A map is the attribution summed over channels with its
sign kept (a method whose maps are non-negative, such as saliency or the CAMs, stays so).

- Faithfulness (through the batched :class:`~onnxplain.runtime.driver.Driver`): pixel flipping (Bach et
  al. 2015) and region perturbation (Samek et al. 2017) as AOPC, most relevant first (MoRF) and
  least relevant first (LeRF); deletion and insertion AUC (Petsiuk et al. 2018).
- Localisation against the masks: pointing game, relevance mass and relevance rank accuracy.
- Class sensitivity: the rank correlation of the map for the explained class with the map for
  the least likely ("absent") class.
- Robustness: max-sensitivity under uniform input noise (Yeh et al. 2019).
- Sanity checks (Adebayo et al. 2018): cascading and independent randomisation of the weights,
  and, given a model trained on shuffled labels, data randomisation; all by the rank correlation
  of absolute maps (and SSIM) with the original model's maps. These run on the first
  ``n_sanity`` images, randomised model after randomised model, so that one copy of the weights
  lives at a time.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxplain.errors import OnnxplainError

FAITHFULNESS = ("pixel_flipping", "region_perturbation", "deletion", "insertion")
LOCALISATION = ("pointing_game", "relevance_mass", "relevance_rank")
SANITY = ("cascading", "independent", "data_randomisation")
METRICS = FAITHFULNESS + LOCALISATION + ("class_sensitivity", "max_sensitivity") + SANITY
#: a fast default selection of methods (``--methods all`` gives every method)
DEFAULT_METHODS = (
    "gradient",
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "deconvnet",
    "lrp_epsilon_plus",
    "deeplift",
    "gradcam",
    "occlusion",
    "lime",
)


@dataclass(frozen=True)
class Column:
    key: str  # per-image values are stored under this key
    metric: str | None  # the --metrics name that produces it (None: always)
    title: str  # the table header
    better: str  # "↑" or "↓"
    about: str  # one line for the docs


COLUMNS = (
    Column("seconds", None, "s/img", "↓", "seconds per image (explaining only; graph building excluded)"),
    Column(
        "pixel_flipping",
        "pixel_flipping",
        "PF AOPC",
        "↑",
        "pixel flipping (Bach et al. 2015): AOPC of the logit, most relevant pixels first, over the first "
        "--fraction of the image",
    ),
    Column(
        "region_morf",
        "region_perturbation",
        "RP MoRF",
        "↑",
        "region perturbation (Samek et al. 2017): AOPC, most relevant regions first, over the first "
        "--fraction of the regions",
    ),
    Column(
        "region_lerf", "region_perturbation", "RP LeRF", "↓", "region perturbation: AOPC, least relevant regions first"
    ),
    Column(
        "deletion",
        "deletion",
        "del AUC",
        "↓",
        "deletion (Petsiuk et al. 2018): AUC of the softmax score as pixels take the --fill value",
    ),
    Column("insertion", "insertion", "ins AUC", "↑", "insertion (Petsiuk et al. 2018): AUC from a blurred image"),
    Column(
        "pointing_game", "pointing_game", "point", "↑", "pointing game (Zhang et al. 2016): the maximum in the mask"
    ),
    Column(
        "relevance_mass",
        "relevance_mass",
        "mass",
        "↑",
        "relevance mass accuracy (Arras et al. 2022): positive relevance inside the mask",
    ),
    Column(
        "relevance_rank",
        "relevance_rank",
        "rank",
        "↑",
        "relevance rank accuracy (Arras et al. 2022): top-|mask| pixels inside the mask",
    ),
    Column(
        "class_sensitivity",
        "class_sensitivity",
        "cls corr",
        "↓",
        "rank correlation (|maps|) of the map for the explained class and for the least likely class",
    ),
    Column(
        "max_sensitivity",
        "max_sensitivity",
        "max sens",
        "↓",
        "max-sensitivity (Yeh et al. 2019): max relative map change under uniform noise",
    ),
    Column(
        "cascading",
        "cascading",
        "casc corr",
        "↓",
        "cascading randomisation (Adebayo et al. 2018): rank correlation (|maps|) with the original, mean over "
        "the cascade (top layer, top two layers, ..., all layers random)",
    ),
    Column("cascading_ssim", "cascading", "casc SSIM", "↓", "cascading randomisation: SSIM, mean over the cascade"),
    Column(
        "cascading_last",
        "cascading",
        "casc last",
        "↓",
        "cascading randomisation: rank correlation (|maps|) once every layer is random",
    ),
    Column(
        "independent",
        "independent",
        "indep corr",
        "↓",
        "independent randomisation: rank correlation (|maps|), mean over the layers",
    ),
    Column(
        "data_randomisation",
        "data_randomisation",
        "data corr",
        "↓",
        "data randomisation: rank correlation (|maps|) with the model trained on shuffled labels",
    ),
)
CURVES = {
    "pixel_flipping": "pixel flipping (MoRF)",
    "region_morf": "region perturbation (MoRF)",
    "region_lerf": "region perturbation (LeRF)",
    "deletion": "deletion",
    "insertion": "insertion",
}


@dataclass
class Settings:
    """The knobs of an evaluation (defaults suit 64-224 px images)."""

    n_sanity: int = 4  # images for the randomisation tests and max-sensitivity
    region: int = 8  # region perturbation: region side in pixels
    steps: int = 64  # perturbation curves: points after the unperturbed one
    fill: object = "mean"  # pixel flipping, region perturbation, deletion: "mean", "uniform", "blur" or a number
    fraction: float = 0.25  # pixel flipping / region perturbation: share of the image perturbed (AOPC's L)
    radius: float = 0.02  # max-sensitivity: noise bound, a fraction of each image's value range
    noise_samples: int = 8  # max-sensitivity: noisy copies per image
    batch_size: int = 16
    seed: int = 0
    method_params: dict = field(default_factory=dict)  # method -> extra Explainer.run keywords


@dataclass
class Evaluation:
    """Per-image values, curves and sanity profiles of every method."""

    methods: list
    metrics: list
    n: int
    n_sanity: int
    values: dict = field(default_factory=dict)  # column key -> method -> [n] per-image values
    curves: dict = field(default_factory=dict)  # curve key -> method -> Curve
    sanity: dict = field(default_factory=dict)  # "cascading"/"independent" -> method -> list of rows
    cascade_maps: dict = field(default_factory=dict)  # method -> [original, after layer 1, ...] maps of image 0
    layers: list = field(default_factory=list)  # the weight layers, top first
    image: np.ndarray | None = None  # the first image, for the cascade picture

    def columns(self) -> list:
        return [c for c in COLUMNS if c.key in self.values]

    def mean(self, key: str, method: str) -> float:
        return nanmean(self.values[key].get(method, [np.nan]))

    def sem(self, key: str, method: str) -> float:
        v = np.asarray(self.values[key].get(method, [np.nan]), dtype=np.float64)
        v = v[np.isfinite(v)]
        return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")

    # ---- reports -----------------------------------------------------------------------------------
    def table(self) -> str:
        """The method x metric table of means, as fixed-width text."""
        cols = self.columns()
        width = max(len("method"), *(len(m) for m in self.methods))
        head = f"{'method':<{width}} " + " ".join(f"{c.title + ' ' + c.better:>11}" for c in cols)
        lines = [head]
        for m in self.methods:
            lines.append(f"{m:<{width}} " + " ".join(f"{_fmt(self.mean(c.key, m)):>11}" for c in cols))
        return "\n".join(lines)

    def markdown(self) -> str:
        cols = self.columns()
        lines = [
            "| method | " + " | ".join(f"{c.title} {c.better}" for c in cols) + " |",
            "|---|" + "---:|" * len(cols),
        ]
        for m in self.methods:
            lines.append(f"| {m} | " + " | ".join(_fmt(self.mean(c.key, m)) for c in cols) + " |")
        return "\n".join(lines)

    def rows(self) -> list:
        """Long format: one dict per (method, column) with mean, standard error and count."""
        out = []
        for c in self.columns():
            for m in self.methods:
                v = np.asarray(self.values[c.key].get(m, []), dtype=np.float64)
                out.append(
                    {
                        "method": m,
                        "metric": c.key,
                        "better": "higher" if c.better == "↑" else "lower",
                        "mean": self.mean(c.key, m),
                        "sem": self.sem(c.key, m),
                        "n": int(np.isfinite(v).sum()),
                    }
                )
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["method", "metric", "better", "mean", "sem", "n"], lineterminator="\n")
        w.writeheader()
        for r in self.rows():
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def to_json(self) -> dict:
        def num(v):
            v = np.asarray(v, dtype=np.float64)
            return [None if not np.isfinite(a) else float(a) for a in v.ravel()]

        return {
            "methods": self.methods,
            "metrics": self.metrics,
            "n": self.n,
            "n_sanity": self.n_sanity,
            "columns": {
                c.key: {"title": c.title, "better": "higher" if c.better == "↑" else "lower", "about": c.about}
                for c in self.columns()
            },
            "summary": self.rows(),
            "per_image": {k: {m: num(v) for m, v in d.items()} for k, d in self.values.items()},
            "curves": {
                k: {m: {"fraction": num(c.fraction), "mean": num(nanmean(c.scores, axis=0))} for m, c in d.items()}
                for k, d in self.curves.items()
            },
            "sanity": {
                k: {
                    m: [
                        {"layer": r["layer"], **{s: num(r[s]) for s in ("spearman", "spearman_abs", "ssim")}}
                        for r in rows
                    ]
                    for m, rows in d.items()
                }
                for k, d in self.sanity.items()
            },
            "layers": self.layers,
        }


def nanmean(v, axis=None):
    """The mean of the finite values (NaN where there are none), without numpy's warning."""
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, v, 0.0).sum(axis=axis) / n
    return float(out) if np.ndim(out) == 0 else out


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "-"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.4g}"


# ---- data ----------------------------------------------------------------------------------------------
def load_data(path) -> tuple:
    """``images`` (the model's layout), optional ``labels`` [N] int and ``masks`` [N, H, W] bool from
    an ``.npz`` file (keys ``images`` or ``x``, ``labels`` or ``y``, ``masks``)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxplainError(f"no such data file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the user's
        raise OnnxplainError(f"cannot read {path} as an .npz file: {type(e).__name__}: {e}") from None
    images = d.get("images", d.get("x"))
    if images is None:
        raise OnnxplainError(f"{path} has no 'images' array (keys: {', '.join(d) or 'none'})")
    return images, d.get("labels", d.get("y")), d.get("masks")  # validated by evaluate()


def check_data(images, labels=None, masks=None) -> tuple:
    """Validated ``(images [N, C, H, W] float, labels [N] int64 or None, masks [N, H, W] bool or None)``."""
    images = np.asarray(images)
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise OnnxplainError(f"images must be a float array [N, C, H, W], got {images.dtype} {list(images.shape)}")
    if len(images) == 0:
        raise OnnxplainError("no images to evaluate")
    n, h, w = images.shape[0], images.shape[2], images.shape[3]
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (n,):
            raise OnnxplainError(f"labels must be {n} integers, got {labels.dtype} {list(labels.shape)}")
        labels = labels.astype(np.int64)
    if masks is not None:
        from onnxplain.evaluation.metrics.localisation import as_mask

        masks = np.asarray(masks)
        if masks.shape != (n, h, w):
            raise OnnxplainError(f"masks must have shape {[n, h, w]} (one per image), got {list(masks.shape)}")
        masks = as_mask(masks, "masks")
    return images, labels, masks


def heatmaps(attribution: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, C, H, W] (or [N, 1, h, w]) attributions -> [N, H, W] float64 maps, summed over channels
    (signed), resized to ``size`` if a map is coarser."""
    from onnxplain.io.render import resize_map

    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 4:
        a = a.sum(axis=1)
    if a.ndim != 3:
        raise OnnxplainError(f"cannot turn an attribution of shape {list(a.shape)} into maps [N, H, W]")
    if a.shape[1:] != tuple(size):
        a = np.stack([resize_map(m, size) for m in a])
    return a


# ---- the run -------------------------------------------------------------------------------------------
def resolve(names, allowed, what: str) -> list:
    if names is None:
        return list(allowed)
    out = []
    for n in names:
        for part in str(n).split(","):
            part = part.strip()
            if part == "all":
                out += list(allowed)
            elif part:
                if what == "method":  # any spelling or alias of the method table, with "did you mean"
                    part = lookup(part).name
                if part not in allowed:
                    raise OnnxplainError(f"unknown {what} '{part}' (choose from: {', '.join(allowed)}, or all)")
                out.append(part)
    if not out:
        raise OnnxplainError(f"no {what}s given")
    return list(dict.fromkeys(out))


def layout_of(explainer, layout: str | None = None) -> str:
    """ "NCHW" or "NHWC": ``layout`` checked, or the explainer's input's (NCHW when unclear)."""
    from onnxplain.io.preprocess import infer_layout

    layout = (layout or infer_layout(explainer.x.shape) or "NCHW").upper()
    if layout not in ("NCHW", "NHWC"):
        raise OnnxplainError(f"layout must be NCHW or NHWC, not '{layout}'")
    return layout


class _Maps:
    """Explains with one model (a path, a ModelProto or an Explainer) and turns attributions into
    maps; graphs are built once per method. Takes and gives NCHW; an NHWC model gets its own layout."""

    def __init__(self, model, settings: Settings, size=None, layout: str | None = None, providers=None):
        from onnxplain.runtime.explainer import Explainer

        self.explainer = ex = model if isinstance(model, Explainer) else Explainer(model, providers=providers)
        self.nhwc = layout_of(ex, layout) == "NHWC"
        ex.options.channel_axis = 3 if self.nhwc else 1
        self.settings, self.size = settings, size

    def __call__(self, method: str, x, target) -> np.ndarray:
        s = self.settings
        shared = lookup(method).takes({"seed": s.seed})
        res = self.explainer.run(
            to_model(x, self.nhwc),
            method,
            target=np.asarray(target),
            batch_size=s.batch_size,
            **shared,
            **s.method_params.get(method, {}),
        )
        a = res.attribution
        return heatmaps(np.moveaxis(a, -1, 1) if self.nhwc and a.ndim == 4 else a, self.size)


def lookup(name: str):
    from onnxplain.methods.catalog import method

    return method(name)


def to_model(x: np.ndarray, nhwc: bool) -> np.ndarray:
    """NCHW images in the model's layout."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x


class _NHWCDriver:
    """A driver fed NCHW rows for an NHWC model: the metrics build rows in NCHW, the model takes NHWC."""

    def __init__(self, drv):
        self.drv = drv

    def __getattr__(self, name):
        return getattr(self.drv, name)

    def score_rows(self, rows, n, target, **kw):
        return self.drv.score_rows(lambda i, j: to_model(rows(i, j), True), n, target, **kw)

    def outputs_rows(self, rows, n, **kw):
        return self.drv.outputs_rows(lambda i, j: to_model(rows(i, j), True), n, **kw)


def evaluate(
    model,
    images,
    labels=None,
    masks=None,
    methods=None,
    metrics=None,
    shuffled_model=None,
    settings: Settings | None = None,
    progress=None,
    layout: str | None = None,
) -> Evaluation:
    """Evaluate ``methods`` on ``images`` by ``metrics`` (names from :data:`METRICS`).

    ``model`` is a path, a ModelProto or an :class:`~onnxplain.runtime.explainer.Explainer`. ``images`` are
    in the model's layout, ``layout`` "NCHW" or "NHWC" (default: from the model's
    input, NCHW when unclear); ``labels`` are the classes explained (default: the predicted ones);
    ``masks`` [N, H, W] the ground-truth regions the localisation metrics need; ``shuffled_model``
    the same architecture trained on shuffled labels, which data randomisation needs.
    ``progress(total=...)`` is called once with the number of steps, then
    ``progress(advance=1, description=...)`` after each.
    """
    from onnxplain.evaluation.metrics import faithfulness as faith
    from onnxplain.evaluation.metrics import localisation as loc
    from onnxplain.evaluation.metrics import robustness as rob
    from onnxplain.runtime.driver import SCORE, for_explainer

    s = settings or Settings()
    explain = _Maps(model, s, layout=layout)
    nhwc = explain.nhwc
    images = np.asarray(images)
    if nhwc and images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)  # the metrics work in NCHW
    images, labels, masks = check_data(images, labels, masks)
    from onnxplain.evaluation.metrics import sanity
    from onnxplain.runtime.explainer import all_methods

    methods = resolve(methods, all_methods(), "method") if methods is not None else list(DEFAULT_METHODS)
    metrics = resolve(metrics, METRICS, "metric")
    if masks is None and set(metrics) & set(LOCALISATION):
        raise OnnxplainError(
            f"{', '.join(m for m in metrics if m in LOCALISATION)} need ground-truth masks "
            "(a 'masks' array in the data)"
        )
    if "data_randomisation" in metrics and shuffled_model is None:
        raise OnnxplainError("data_randomisation needs a model trained on shuffled labels (--shuffled-model)")
    step = progress or (lambda **k: None)
    source = explain.explainer.canonical.model  # the model as loaded: what randomisation redraws
    layers = [lay.name for lay in sanity.weight_layers(source)] if {"cascading", "independent"} & set(metrics) else []
    step(total=count_steps(methods, metrics, len(layers)))
    size = explain.size = images.shape[2:]
    explain.explainer.check_input(to_model(images[:1], nhwc))
    drv = for_explainer(explain.explainer)
    logits = drv.per_class(drv.outputs(to_model(images, nhwc))[SCORE])
    if nhwc:
        drv = _NHWCDriver(drv)
    targets = logits.argmax(axis=1) if labels is None else explain.explainer.check_target(labels, len(images))
    n, k = len(images), min(s.n_sanity, len(images))
    ev = Evaluation(methods=methods, metrics=metrics, n=n, n_sanity=k, image=images[0], layers=layers)
    keep = lambda key: ev.values.setdefault(key, {})  # noqa: E731
    for m in methods:
        step(description=f"{m}: explaining")
        explain(m, images[:1], targets[:1])  # graph and session, untimed
        t0 = time.perf_counter()
        maps = explain(m, images, targets)
        keep("seconds")[m] = np.full(n, (time.perf_counter() - t0) / n)
        step(advance=1)
        if "pixel_flipping" in metrics:
            step(description=f"{m}: pixel flipping")
            c = faith.region_perturbation(
                drv,
                images,
                maps,
                targets,
                region=1,
                order="morf",
                steps=s.steps,
                fill=s.fill,
                fraction=s.fraction,
                seed=s.seed,
            )
            ev.curves.setdefault("pixel_flipping", {})[m] = c
            keep("pixel_flipping")[m] = faith.aopc(c)
            step(advance=1)
        if "region_perturbation" in metrics:
            step(description=f"{m}: region perturbation")
            for order in ("morf", "lerf"):
                c = faith.region_perturbation(
                    drv,
                    images,
                    maps,
                    targets,
                    region=s.region,
                    order=order,
                    steps=s.steps,
                    fill=s.fill,
                    fraction=s.fraction,
                    seed=s.seed,
                )
                ev.curves.setdefault(f"region_{order}", {})[m] = c
                keep(f"region_{order}")[m] = faith.aopc(c)
            step(advance=1)
        for name, fn, start in (("deletion", faith.deletion, s.fill), ("insertion", faith.insertion, "blur")):
            if name in metrics:
                step(description=f"{m}: {name}")
                c = fn(drv, images, maps, targets, steps=s.steps, baseline=start)
                ev.curves.setdefault(name, {})[m] = c
                keep(name)[m] = c.auc()
                step(advance=1)
        for name in LOCALISATION:
            if name in metrics:
                keep(name)[m] = getattr(loc, name)(maps, masks)
        if "class_sensitivity" in metrics:
            step(description=f"{m}: class sensitivity")
            other = rob.least_likely(logits)
            scores = rob.class_sensitivity(lambda x, t, m=m: explain(m, x, t), images, targets, other)
            keep("class_sensitivity")[m] = scores["spearman_abs"]
            step(advance=1)
        if "max_sensitivity" in metrics:
            step(description=f"{m}: max-sensitivity")
            keep("max_sensitivity")[m] = rob.max_sensitivity(
                lambda x, t, m=m: explain(m, x, t),
                images[:k],
                targets[:k],
                radius=s.radius,
                samples=s.noise_samples,
                seed=s.seed,
            )
            step(advance=1)
    _sanity(ev, source, shuffled_model, explain, images[:k], targets[:k], s, size, step, nhwc)
    return ev


def _sanity(
    ev: Evaluation, model, shuffled_model, explain: _Maps, x, t, s: Settings, size, step, nhwc: bool = False
) -> None:
    """The randomisation tests, one randomised model at a time (every method on each)."""
    from onnxplain.evaluation.metrics import sanity

    kinds = [kind for kind in SANITY if kind in ev.metrics]
    if not kinds:
        return
    reference = {m: explain(m, x, t) for m in ev.methods}
    ev.cascade_maps = {m: [reference[m][0]] for m in ev.methods}
    for kind in kinds:
        if kind == "data_randomisation":
            models = [("shuffled labels", shuffled_model)]
        else:
            models = (sanity.cascading if kind == "cascading" else sanity.independent)(model, seed=s.seed)
        for label, randomised in models:
            other = _Maps(randomised, s, size, "NHWC" if nhwc else "NCHW", providers=explain.explainer.providers)
            for m in ev.methods:
                step(description=f"{kind}: {label}: {m}")
                row = sanity.score_maps(label, other(m, x, t), reference[m])
                ev.sanity.setdefault(kind, {}).setdefault(m, []).append(row)
                if kind == "cascading":
                    ev.cascade_maps[m].append(row["maps"][0])
                step(advance=1)
        for m in ev.methods:
            rows = ev.sanity[kind][m]
            if kind == "cascading":
                ev.values.setdefault("cascading", {})[m] = np.mean([r["spearman_abs"] for r in rows], axis=0)
                ev.values.setdefault("cascading_ssim", {})[m] = np.mean([r["ssim"] for r in rows], axis=0)
                ev.values.setdefault("cascading_last", {})[m] = rows[-1]["spearman_abs"]
            elif kind == "independent":
                ev.values.setdefault("independent", {})[m] = np.mean([r["spearman_abs"] for r in rows], axis=0)
            else:
                ev.values.setdefault("data_randomisation", {})[m] = rows[0]["spearman_abs"]


def short_layer(name: str) -> str:
    """'/features/features.12/Conv' -> 'features.12/Conv' (the last two path parts)."""
    parts = [p for p in name.split("/") if p]
    return "/".join(parts[-2:]) if parts else name


def count_steps(methods, metrics, n_layers: int) -> int:
    """How many ``progress(advance=1)`` calls :func:`evaluate` makes."""
    per_method = 1 + sum(
        m in metrics
        for m in (
            "pixel_flipping",
            "region_perturbation",
            "deletion",
            "insertion",
            "class_sensitivity",
            "max_sensitivity",
        )
    )
    models = n_layers * (("cascading" in metrics) + ("independent" in metrics)) + ("data_randomisation" in metrics)
    return len(methods) * (per_method + models)


# ---- pictures and files --------------------------------------------------------------------------------
def curve_plots(ev: Evaluation) -> dict:
    """``{curve key: RGB image}``: the mean curve of every method."""
    from onnxplain.io.plots import line_chart

    out = {}
    for key, by_method in ev.curves.items():
        series = {m: (c.fraction, nanmean(c.scores, axis=0)) for m, c in by_method.items()}
        xlabel = "fraction inserted" if key == "insertion" else "fraction perturbed"
        ylabel = "softmax score" if key in ("deletion", "insertion") else "logit"
        out[key] = line_chart(series, f"{CURVES[key]}, mean of {ev.n} images", xlabel, ylabel)
    return out


def sanity_profile(ev: Evaluation, kind: str = "cascading") -> np.ndarray:
    """Rank correlation (|maps|) against the layers randomised, one line per method (Adebayo's figure)."""
    from onnxplain.io.plots import line_chart

    labels = ["original"] + [short_layer(r["layer"]) for r in next(iter(ev.sanity[kind].values()))]
    series = {
        m: (np.arange(len(labels)), [1.0] + [nanmean(r["spearman_abs"]) for r in rows])
        for m, rows in ev.sanity[kind].items()
    }
    title = (
        "cascading randomisation, top layer first" if kind == "cascading" else f"{kind} randomisation"
    ) + f", mean of {ev.n_sanity} images"
    return line_chart(series, title, "", "rank correlation (|maps|)", xticklabels=labels, ylim=(-0.2, 1.0))


def cascade_grid(ev: Evaluation) -> np.ndarray:
    """Rows: methods; columns: the original model's map of the first image, then after each cascading step."""
    from onnxplain.io import render
    from onnxplain.io.demo import to_uint8_hwc

    img = to_uint8_hwc(ev.image) if ev.image.shape[0] in (1, 3) else None
    labels = ["original"] + [f"+ {short_layer(layer)}" for layer in ev.layers]
    rows = []
    for m, maps in ev.cascade_maps.items():
        signed = render.is_signed(m)
        rows.append(
            [render.overlay(img, a, signed=signed) if img is not None else render.colorize(a, signed) for a in maps]
        )
    return render.grid(
        rows,
        titles=labels,
        row_titles=list(ev.cascade_maps),
        note="cascading randomisation (Adebayo et al. 2018): layers randomised from the top down; "
        "each map on its own colour scale",
    )


def write(ev: Evaluation, out_dir) -> list:
    """Write the table (CSV, JSON, Markdown) and the pictures into ``out_dir``; returns the paths."""
    from onnxplain.io.render import save_png, save_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (
        ("evaluation.csv", ev.to_csv()),
        ("evaluation.json", json.dumps(ev.to_json(), indent=1)),
        ("evaluation.md", ev.markdown() + "\n"),
    ):
        files.append(save_text(text, out / name))
    for key, picture in curve_plots(ev).items():
        files.append(save_png(picture, out / f"curve_{key}.png"))
    for kind in ("cascading", "independent"):
        if kind in ev.sanity:
            files.append(save_png(sanity_profile(ev, kind), out / f"sanity_{kind}.png"))
    if ev.cascade_maps and len(next(iter(ev.cascade_maps.values()))) > 1:
        files.append(save_png(cascade_grid(ev), out / "sanity_cascade_maps.png"))
    return files


def time_ratios(ev: Evaluation, reference: str = "gradient") -> dict:
    """Seconds per image of every method divided by the reference method's (empty without it)."""
    if reference not in ev.values.get("seconds", {}):
        return {}
    base = ev.mean("seconds", reference)
    return {m: ev.mean("seconds", m) / base for m in ev.methods if m != reference}
