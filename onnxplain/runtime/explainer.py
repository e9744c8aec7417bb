"""The Python API: ``Explainer(model).explain(x, method=..., target=...)``."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxplain.graph.canonicalize import canonicalize
from onnxplain.errors import OnnxplainError
from onnxplain.graph.rewrite import Options, build
from onnxplain.methods.gradient import ig_alphas, interpolate, noisy
from onnxplain.runtime.session import make_session

LOOPED = ("integrated_gradients", "smoothgrad", "smoothgrad_sq")  # driven from Python over the gradient graph
FORWARD_CAMS = ("scorecam", "ablationcam")  # forward passes only, driven from Python (methods/cam_forward.py)
SUPERPIXEL = ("lime", "kernelshap")  # black-box, over superpixels (methods/lime.py)
BLACKBOX = ("occlusion", "rise")  # black-box, sliding patches / random masks (methods/occlusion.py, rise.py)
PERTURBATION = ("meaningful_perturbation", "extremal_perturbation")  # masks optimised over the gradient graph


def all_methods() -> tuple:
    """Every method name :meth:`Explainer.run` takes: the graph heads, then those driven from Python."""
    from onnxplain.methods import HEADS

    return tuple(HEADS) + FORWARD_CAMS + BLACKBOX + SUPERPIXEL + PERTURBATION


@dataclass
class Explanation:
    attribution: np.ndarray  # raw, signed; the explained input's shape (saliency: one channel)
    target: np.ndarray | None  # the class explained for each item (class mode)
    outputs: dict  # the model's own outputs for x


class Explainer:
    """Explains one ONNX model; explanation graphs and sessions are built once per method.

    >>> ex = Explainer("model.onnx")
    >>> heat = ex.explain(x, method="integrated_gradients", target=3)
    """

    def __init__(self, model, *, input: str | None = None, output: str | None = None,
                 probabilities: bool = False, class_axis: int | None = None, channel_axis: int = 1,
                 rules=None, providers: list[str] | None = None):
        self.canonical = canonicalize(model)
        self.options = Options(input=input, output=output, probabilities=probabilities,
                               class_axis=class_axis, channel_axis=channel_axis, rules=rules)
        self.providers = providers
        self.x = self.canonical.input(input)
        self._graphs: dict = {}
        self._sessions: dict = {}

    # ---- graphs and sessions --------------------------------------------------------------
    def graph(self, method: str = "gradient", target_mode: str = "class", **params) -> onnx.ModelProto:
        key = (method, target_mode, tuple(sorted(params.items())))
        if key not in self._graphs:
            options = replace(self.options, target_mode=target_mode, **params)
            self._graphs[key] = build(canonicalize(self.canonical.model), method, options)
        return self._graphs[key]

    def _session(self, method, target_mode):
        key = (method, target_mode)
        if key not in self._sessions:
            self._sessions[key] = make_session(self.graph(method, target_mode), self.providers)
        return self._sessions[key]

    @property
    def fixed_batch(self) -> int | None:
        d = self.x.shape[0] if self.x.shape else None
        return d if isinstance(d, int) and d > 0 else None

    @property
    def num_classes(self) -> int | None:
        from onnxplain.graph.canonicalize import find_logits
        from onnxplain.graph.rewrite import class_axis_of

        out = self.canonical.output(self.options.output)
        logits = out if self.options.probabilities else find_logits(self.canonical.graph, out)[0]
        if logits.shape is None:
            return None
        c = logits.shape[class_axis_of(logits, self.options)]
        return c if isinstance(c, int) else None

    # ---- validation -----------------------------------------------------------------------
    def check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (no numpy type): bfloat16 models take float32
            x = x.astype(np.float32)
        want = self.x.shape
        if not np.issubdtype(x.dtype, np.floating):
            raise OnnxplainError(f"input '{self.x.name}' must be a float array, got {x.dtype}")
        x = x.astype(self.x.dtype, copy=False)
        if want is not None:
            if x.ndim != len(want):
                raise OnnxplainError(f"input '{self.x.name}' expects shape {_fmt(want)}, got {list(x.shape)}")
            for i, (d, n) in enumerate(zip(want, x.shape)):
                if isinstance(d, int) and d > 0 and d != n and not (i == 0 and d == 1):
                    raise OnnxplainError(f"input '{self.x.name}' expects shape {_fmt(want)}, got {list(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise OnnxplainError(f"input '{self.x.name}' contains NaN or infinite values")
        return x

    def check_target(self, target, n: int) -> np.ndarray:
        t = np.full(n, -1, dtype=np.int64) if target is None else np.asarray(target)
        if not np.issubdtype(t.dtype, np.integer):
            raise OnnxplainError(f"target must be integer class indices, got {t.dtype}")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 or t.size == 1 else t.astype(np.int64)
        if t.shape != (n,):
            raise OnnxplainError(f"target must give one class per batch item ({n}), got shape {list(t.shape)}")
        c = self.num_classes
        if c is not None and (np.any(t >= c) or np.any(t < -1)):
            raise OnnxplainError(f"target {t.tolist()} out of range: the model has {c} classes (use -1 for argmax)")
        return np.ascontiguousarray(t)

    # ---- running --------------------------------------------------------------------------
    def _run(self, method, target_mode, feeds: dict, batch_size: int):
        """Run an explanation graph over the batch axis in chunks; concatenates every output."""
        sess = self._session(method, target_mode)
        names = [o.name for o in sess.get_outputs()]
        n = len(feeds[self.x.name])
        step = 1 if self.fixed_batch == 1 else max(1, batch_size)
        parts = [sess.run(names, {k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}

    def run(self, x, method: str = "gradient", target=None, target_weights=None, baseline=None, *,
            steps: int = 32, samples: int | None = None, noise: float = 0.15, seed: int = 0,
            batch_size: int = 16, unit=None, layer: str | None = None, score: str = "softmax",
            progress=None, **params) -> Explanation:
        """Explain ``x`` ([N, ...]); returns attribution, explained targets and the model outputs.

        ``unit=("layer", c[, y, x])`` explains one channel/unit of an inner tensor instead of a class
        (:mod:`onnxplain.methods.featurevis`). ``scorecam``/``ablationcam`` (:mod:`onnxplain.methods.cam_forward`)
        take ``layer`` (default: the automatic CAM layer), ``score`` (Score-CAM: "softmax" or "logit")
        and ``progress(done, total)``; their forward passes run ``batch_size`` at a time.

        ``lime``/``kernelshap`` (:mod:`onnxplain.methods.lime`) take ``samples`` (default 1000 /
        2048; smoothgrad's default is 16), ``seed``, ``progress`` and the keywords ``segmentation``
        ("slic", "quickshift", "felzenszwalb"), ``segments`` (explicit labels), ``fill`` ("mean" or
        a number), ``kernel_width`` (LIME, 0.25), ``alpha`` (LIME's ridge) and the segmentation's own
        parameters (``n_segments``, ``compactness``, ``kernel_size``, ``scale``, ...).

        ``occlusion`` (:mod:`onnxplain.methods.occlusion`) takes ``window``, ``stride``, ``fill`` (a number
        or "mean") and ``blur`` (a Gaussian sigma: blurred patches instead of ``fill``); ``rise``
        (:mod:`onnxplain.methods.rise`) takes ``n_masks``, ``cells``, ``p`` and ``seed``. Both take
        ``score`` ("softmax" or "logit") and ``progress``; their forward passes are batched by
        :class:`onnxplain.runtime.driver.Driver` (the largest batch that fits, up to 64; ``batch_size`` is not used).

        ``meaningful_perturbation``/``extremal_perturbation`` (:mod:`onnxplain.methods.perturbation`) take
        ``iterations``, ``lr``, ``mask_size``, ``blur``, ``l1``, ``tv``, ``beta``, ``area``, ``area_weight``,
        ``jitter``, ``seed``, ``score`` and ``progress``.
        """
        if params and method not in SUPERPIXEL + BLACKBOX + PERTURBATION:
            raise OnnxplainError(f"unexpected options for {method}: {', '.join(sorted(params))}")
        x = self.check_input(x)
        n = len(x)
        if unit is not None:
            from onnxplain.methods.featurevis import explain_unit

            if target is not None or target_weights is not None:
                raise OnnxplainError("give either a unit or a target, not both")
            attribution, outputs = explain_unit(self, x, method, unit, batch_size)
            return Explanation(attribution=attribution, target=None, outputs=outputs)
        if method in FORWARD_CAMS:
            from onnxplain.methods import cam_forward

            t = None if target_weights is not None else self.check_target(target, n)
            attribution, _, chosen, outputs = cam_forward.explain(
                self, x, method, t, target_weights, layer=layer, batch_size=batch_size, score=score,
                progress=progress)
            return Explanation(attribution=attribution, target=chosen, outputs=outputs)
        if method in BLACKBOX:
            from onnxplain.methods import occlusion, rise

            mod = occlusion if method == "occlusion" else rise
            extra = {"seed": seed} if method == "rise" else {}
            attribution, chosen, outputs = mod.explain(
                self, x, self.check_target(target, n), target_weights, score=score, progress=progress,
                **extra, **params)
            return Explanation(attribution=attribution, target=chosen, outputs=outputs)
        if method in PERTURBATION:
            from onnxplain.methods import perturbation

            attribution, chosen, outputs = perturbation.explain(
                self, x, self.check_target(target, n), target_weights, method=method, score=score, seed=seed,
                progress=progress, **params)
            return Explanation(attribution=attribution, target=chosen, outputs=outputs)
        if method in SUPERPIXEL:
            from onnxplain.methods import lime

            attribution, chosen, outputs = lime.explain(
                self, x, method, self.check_target(target, n), target_weights, samples=samples,
                seed=seed, batch_size=batch_size, progress=progress, **params)
            return Explanation(attribution=attribution, target=chosen, outputs=outputs)
        if target_weights is not None:
            if target is not None:
                raise OnnxplainError("give either target or target_weights, not both")
            mode, feeds = "weights", {self.x.name: x, "target_weights": np.asarray(target_weights, dtype=x.dtype)}
        else:
            mode, feeds = "class", {self.x.name: x, "target": self.check_target(target, n)}
        if method not in LOOPED:
            if baseline is not None and "baseline" in {i.name for i in self.graph(method, mode).graph.input}:
                feeds["baseline"] = np.ascontiguousarray(np.broadcast_to(np.asarray(baseline, x.dtype), x.shape))
            res = self._run(method, mode, feeds, batch_size)
            return self._explanation(res, res["attribution"])
        # copies per item, over the gradient graph; the target is resolved on x itself
        first = self._run("gradient", mode, feeds, batch_size)
        if mode == "class":
            feeds["target"] = first["target_index"]
        if method == "integrated_gradients":
            base = np.zeros_like(x) if baseline is None else np.broadcast_to(np.asarray(baseline, x.dtype), x.shape)
            alphas, weights = ig_alphas(steps)  # alphas[-1] = 1: the pass at x above
            copies = [interpolate(x[i], base[i], alphas[:-1]) for i in range(n)]
        else:
            rng = np.random.default_rng(seed)
            copies = [noisy(x[i], 16 if samples is None else samples, noise, rng) for i in range(n)]
        attribution = np.empty_like(x)
        for i, c in enumerate(copies):
            k = len(c)
            rep = {name: np.repeat(v[i:i + 1], k, axis=0) for name, v in feeds.items() if name != self.x.name}
            g = self._run("gradient", mode, {self.x.name: c, **rep}, batch_size)["attribution"] if k else c
            if method == "integrated_gradients":
                g = np.concatenate([g, first["attribution"][i:i + 1]])
                attribution[i] = (x[i] - base[i]) * np.tensordot(weights, g, axes=1).astype(x.dtype)
            else:
                attribution[i] = (g * g if method == "smoothgrad_sq" else g).mean(axis=0)
        return self._explanation(first, attribution)

    def _explanation(self, res, attribution):
        outputs = {k: v for k, v in res.items() if k not in ("attribution", "target_index")}
        return Explanation(attribution=attribution, target=res.get("target_index"), outputs=outputs)

    def explain(self, x, method: str = "gradient", target=None, **kw) -> np.ndarray:
        """The attribution for ``x`` as a numpy array (see :meth:`run` for the options)."""
        return self.run(x, method, target, **kw).attribution


def _fmt(shape):
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"
