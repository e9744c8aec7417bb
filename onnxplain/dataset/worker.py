"""The Ray Data actor: one :class:`~onnxplain.runtime.explainer.Explainer` per actor, shards flowing through it.

``Worker`` is the class-based UDF of ``Dataset.map_batches``: Ray builds it once per actor (the
explanation graphs and onnxruntime sessions with it, with ``job.threads`` intra-op threads (by default its
node's cores shared among the actors there; see :func:`onnxplain.dataset.run.threads_per_actor`), CUDA
when the actor was given a GPU), then calls it with batches. A batch is either shard descriptors (file sources:
the actor reads the shard's items itself) or rows with an ``image`` column (a ``ray.data.Dataset``
source: the batch is the shard). For each shard it writes the result file and the errors, atomically,
and returns one summary row. An item that cannot be read, or that makes a method fail, is an error row
with its one-line reason; the rest of the shard goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from onnxplain.dataset import sources, store
from onnxplain.dataset.sources import Items, Shard, one_line
from onnxplain.errors import OnnxplainError


@dataclass
class Job:
    """What every actor is told (plain data: it travels to the cluster)."""

    kind: str  # "explain" | "evaluate"
    output: str
    methods: list
    settings: dict = field(default_factory=dict)  # method -> Explainer.run keywords
    target: object = None  # None: the predicted class; "label": the item's label; an int: that class
    batch_size: int = 16
    recipe: object = None  # a resolved Preprocess for encoded images, or None
    explainer: dict = field(default_factory=dict)  # Explainer keywords (input, output, probabilities, ...)
    layout: str = "NCHW"
    threads: int | None = 1  # intra-op threads per session; None: run.threads_per_actor decides
    gpus: float = 0
    providers: list | None = None
    metrics: list | None = None  # evaluate: None = every per-image metric the data allow
    evaluation: object = None  # evaluate: runner.Settings


def providers_for(job: Job) -> list:
    if job.providers:
        return list(job.providers)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if job.gpus else ["CPUExecutionProvider"]


def build_explainer(model, job: Job):
    import onnx

    from onnxplain.runtime.explainer import Explainer
    from onnxplain.runtime.session import set_default_threads

    set_default_threads(job.threads or 0)
    if isinstance(model, list):  # [ObjectRef of the model's bytes]
        model = model[0]
    if not isinstance(model, (bytes, onnx.ModelProto)):
        import ray

        model = ray.get(model)
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else model
    ex = Explainer(proto, providers=providers_for(job), **job.explainer)
    if job.layout == "NHWC":
        ex.options = replace(ex.options, channel_axis=3)
    return ex


class Worker:
    """``map_batches`` UDF (see the module docstring)."""

    def __init__(self, model, job: Job):
        from onnxplain.graph.builder import np_dtype
        from onnxplain.graph.rewrite import class_axis_of
        from onnxplain.methods.catalog import GRAPH_PARAMS, method

        self.job = job
        self.ex = build_explainer(model, job)
        self.out = Path(job.output)
        self.dtype = np_dtype(self.ex.x) or np.float32
        self._out_t = self.ex.canonical.output(self.ex.options.output)
        try:  # the explained output's class axis, for the prediction columns (None: it has none)
            self._class_axis = class_axis_of(self._out_t, self.ex.options) if self._out_t.shape is not None else None
        except OnnxplainError:
            self._class_axis = None
        for name in job.methods:  # graphs and sessions once per actor, before the first batch
            m = method(name)
            if m.exportable and job.kind == "explain":
                params = {k: job.settings.get(name, {}).get(k) for k in GRAPH_PARAMS}
                self.ex.graph(
                    "gradient" if m.kind == "looped" else m.name,
                    "class",
                    **{k: v for k, v in params.items() if v is not None},
                )
                self.ex._session(
                    "gradient" if m.kind == "looped" else m.name,
                    "class",
                    {k: v for k, v in params.items() if v is not None},
                )

    def __call__(self, batch: dict) -> dict:
        summaries = []
        if "shard" in batch:
            for i in range(len(batch["shard"])):
                shard = Shard.from_row({k: batch[k][i] for k in ("shard", "kind", "paths", "root", "start", "stop")})
                t0 = time.perf_counter()
                try:
                    items = sources.read_shard(shard, self.job.recipe, self.ex.x.shape, self.dtype)
                except Exception as exc:  # noqa: BLE001 -- an unreadable shard file: its items are the errors
                    items = Items([], None, errors=[(p, one_line(exc)) for p in shard.paths])
                summaries.append(self.process(shard.name, items, t0))
        else:
            t0 = time.perf_counter()
            rows = rows_of(batch)
            items = sources.to_items(rows, self.job.recipe, self.ex.x.shape, self.dtype)
            summaries.append(self.process("part-" + sources.digest(r["id"] for r in rows), items, t0))
        return {k: np.array([s[k] for s in summaries]) for k in ("shard", "items", "errors", "seconds", "threads")}

    def process(self, name: str, items: Items, t0: float) -> dict:
        errors = [(i, "reading", reason) for i, reason in items.errors or []]
        n = len(items.ids) + len(items.errors or [])
        if self.job.kind == "explain":
            parts, failed = self.explain(items)
            errors += failed
            if errors:
                store.write_table(store.error_columns(errors), self.out / "errors" / f"{name}.parquet")
            store.write_table(store.maps_columns(parts), self.out / "maps" / f"{name}.parquet")  # last: "done"
        else:
            part, failed = self.evaluate(items)
            errors += failed
            if errors:
                store.write_table(store.error_columns(errors), self.out / "errors" / f"{name}.parquet")
            store.save_npz(store.pack_eval(*part), self.out / "eval" / f"{name}.npz")
        return {
            "shard": name,
            "items": n,
            "errors": len({e[0] for e in errors}),
            "seconds": time.perf_counter() - t0,
            "threads": self.threads(),
        }

    def threads(self) -> int:
        """The intra-op threads of this actor's onnxruntime sessions, as the sessions hold them (0: onnxruntime's
        default), so that a run reports what reached them."""
        sessions = [s for s in self.ex._sessions.values() if hasattr(s, "get_session_options")]
        if not sessions:
            return int(self.job.threads or 0)
        return max(int(s.get_session_options().intra_op_num_threads) for s in sessions)

    # ---- explain --------------------------------------------------------------------------------------
    def targets(self, items: Items):
        t = self.job.target
        if t is None or t == "predicted":
            return None, []
        if t == "label":
            if items.labels is None:
                return False, [(i, "target", "no label to explain (target='label')") for i in items.ids]
            return items.labels, []
        return np.full(len(items.ids), int(t), dtype=np.int64), []

    def explain(self, items: Items) -> tuple[list, list]:
        """(parts for :func:`store.maps_columns`, error rows) of a shard's items."""
        if items.images is None or not len(items.ids):
            return [], []
        target, errors = self.targets(items)
        if target is False:
            return [], errors
        parts = []
        for m in self.job.methods:
            parts += [(m, *part) for part in self._run(m, items.images, target, items.ids, errors)]
        return parts, errors

    def _run(self, method: str, x, target, ids, errors) -> list:
        """[(ids, attributions, predictions, targets, scores)] for the items that ``method`` explains, one part
        per batch that ran; on a failure the batch is retried item by item, so that only the failing items
        become errors."""
        opts = {"batch_size": self.job.batch_size, **self.job.settings.get(method, {})}
        try:
            res = self.ex.run(x, method, target=target, **opts)
            return [(list(ids), res.attribution, *self._predictions(res, len(ids)))]
        except Exception as exc:  # noqa: BLE001
            if len(ids) == 1:
                errors.append((ids[0], method, one_line(exc)))
                return []
        out = []
        for k in range(len(ids)):
            out += self._run(
                method, x[k : k + 1], None if target is None else target[k : k + 1], ids[k : k + 1], errors
            )
        return out

    def _predictions(self, res, n: int):
        """Per item: the predicted class, the explained target and the score of the explained output at the
        target (summed over any other axes); -1, -1 and NaN where the output has no class axis."""
        tgt = np.asarray(res.target, np.int64).reshape(-1) if res.target is not None else np.full(n, -1, np.int64)
        out = res.outputs.get(self._out_t.name)
        if out is None or out.ndim < 2 or self._class_axis is None:
            return np.full(n, -1, np.int64), tgt, np.full(n, np.nan)
        o = np.moveaxis(np.asarray(out[:n], dtype=np.float64), self._class_axis, 1)
        scores = o.reshape(n, o.shape[1], -1).sum(axis=2)
        ok = (tgt >= 0) & (tgt < scores.shape[1])
        score = np.where(ok, scores[np.arange(n), np.clip(tgt, 0, scores.shape[1] - 1)], np.nan)
        return np.argmax(scores, axis=1).astype(np.int64), tgt, score

    # ---- evaluate -------------------------------------------------------------------------------------
    def evaluate(self, items: Items) -> tuple[tuple, list]:
        if items.images is None or not len(items.ids):
            return ([], {}, {}), []
        errors = []
        try:
            return self._evaluate(items), errors
        except Exception as exc:  # noqa: BLE001
            if len(items.ids) == 1:
                return ([], {}, {}), [(items.ids[0], "evaluate", one_line(exc))]
        parts = []
        for k in range(len(items.ids)):
            part, failed = self.evaluate(items.take([k]))
            parts.append(part)
            errors += failed
        return store.merge_eval(parts), errors

    def _evaluate(self, items: Items) -> tuple:
        from onnxplain.evaluation import runner as E

        metrics = per_image_metrics(self.job.metrics, items.masks is not None)
        labels = items.labels if self.job.target != "predicted" else None
        s = replace(self.job.evaluation or E.Settings(), n_sanity=len(items.ids), batch_size=self.job.batch_size)
        ev = E.evaluate(
            self.ex,
            items.images,
            labels,
            items.masks,
            methods=self.job.methods,
            metrics=metrics,
            settings=s,
            layout=self.job.layout,
        )
        return items.ids, ev.values, ev.curves


def per_image_metrics(wanted, have_masks: bool) -> list:
    """The metrics scored per image on every shard: all but the model randomisation tests (those run once,
    on the first images); the localisation ones only where there are masks (when not asked for explicitly)."""
    from onnxplain.evaluation import runner as E

    if wanted is None:
        return [m for m in E.METRICS if m not in E.SANITY and (have_masks or m not in E.LOCALISATION)]
    return [m for m in wanted if m not in E.SANITY]


def rows_of(batch: dict) -> list:
    """A numpy batch of a ``ray.data.Dataset`` -> rows ``{id, image, label?, mask?}``."""
    n = len(batch["image"])
    ids = batch.get("id")
    rows = []
    for k in range(n):
        image = batch["image"][k]
        if ids is not None:
            i = str(ids[k])
        else:
            import hashlib

            raw = image if isinstance(image, bytes) else np.ascontiguousarray(image).tobytes()
            i = "sha1:" + hashlib.sha1(raw).hexdigest()[:16]
        row = {"id": i, "image": image}
        for key in ("label", "mask"):
            if key in batch:
                row[key] = batch[key][k]
        rows.append(row)
    return rows


def sanity_task(model, job: Job, rows: list, shuffled, metrics: list):
    """The model randomisation tests on a few items, once per run (a Ray task): the runner's ``_sanity``
    results (rows, cascade maps, layers, per-image values of the sanity columns) and the first image."""
    import onnx

    from onnxplain.evaluation import runner as E

    ex = build_explainer(model, job)
    if shuffled is not None and not isinstance(shuffled, (bytes, onnx.ModelProto)):
        import ray

        shuffled = ray.get(shuffled)
    if isinstance(shuffled, bytes):
        shuffled = onnx.load_from_string(shuffled)
    items = sources.to_items(rows, job.recipe, ex.x.shape, np.float32)
    if items.images is None:
        return None
    labels = items.labels if job.target != "predicted" else None
    s = replace(job.evaluation or E.Settings(), n_sanity=len(items.ids), batch_size=job.batch_size)
    ev = E.evaluate(
        ex,
        items.images,
        labels,
        None,
        methods=job.methods,
        metrics=metrics,
        shuffled_model=shuffled,
        settings=s,
        layout=job.layout,
    )
    keys = ("cascading", "cascading_ssim", "cascading_last", "independent", "data_randomisation")
    return {
        "sanity": ev.sanity,
        "cascade_maps": ev.cascade_maps,
        "layers": ev.layers,
        "image": ev.image,
        "n": len(items.ids),
        "values": {k: v for k, v in ev.values.items() if k in keys},
    }
