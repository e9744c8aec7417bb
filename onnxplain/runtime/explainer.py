"""The Python API: ``Explainer(model).explain(x, method=..., target=...)``."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from onnxplain.errors import OnnxplainError, user_errors
from onnxplain.graph.canonicalize import canonicalize
from onnxplain.graph.rewrite import Options, build
from onnxplain.runtime.result import Explanation
from onnxplain.runtime.session import make_session
from onnxplain.targets import Target
from onnxplain.validate import as_array, check_run_memory, targets_in_range
from onnxplain.validate import class_axis as check_class_axis



def all_methods() -> tuple:
    """Every method name :meth:`Explainer.run` takes, in the method table's order."""
    from onnxplain.methods.catalog import METHODS

    return METHODS.names()


class Explainer:
    """Explains one ONNX model; explanation graphs and sessions are built once per method.

    >>> ex = Explainer("model.onnx")
    >>> heat = ex.explain(x, method="integrated_gradients", target=3)
    """

    def __init__(self, model, *, input: str | None = None, output: str | None = None,
                 probabilities: bool = False, class_axis: int | None = None, channel_axis: int = 1,
                 rules=None, providers: list[str] | None = None, max_memory=None):
        from onnxplain.validate import parse_bytes

        self.max_memory = None if max_memory is None else parse_bytes(max_memory, "max_memory")
        with user_errors("cannot load the model"):
            self.canonical = canonicalize(model)
        self.options = Options(input=input, output=output, probabilities=probabilities,
                               class_axis=class_axis, channel_axis=channel_axis, rules=rules)
        self.providers = providers
        self.x = self.canonical.input(input)
        out = self.canonical.output(output)
        if class_axis is not None and out.shape is not None:
            check_class_axis(class_axis, len(out.shape), f"output '{out.name}'")
        self._graphs: dict = {}
        self._sessions: dict = {}

    # ---- graphs and sessions --------------------------------------------------------------
    def graph(self, method: str = "gradient", target_mode: str = "class", **params) -> onnx.ModelProto:
        key = (method, target_mode, tuple(sorted(params.items())))
        if key not in self._graphs:
            options = replace(self.options, target_mode=target_mode, **params)
            self._graphs[key] = build(canonicalize(self.canonical.model), method, options)
        return self._graphs[key]

    def _session(self, method, target_mode, params: dict | None = None):
        params = params or {}
        key = (method, target_mode, tuple(sorted(params.items())))
        if key not in self._sessions:
            self._sessions[key] = make_session(self.graph(method, target_mode, **params), self.providers)
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
        x = as_array(x, f"input '{self.x.name}'")
        if x.ndim == 0 or len(x) == 0:
            raise OnnxplainError(f"input '{self.x.name}' is an empty batch (shape {list(x.shape)}); give at least one item")
        want = self.x.shape
        if not np.issubdtype(x.dtype, np.floating):
            raise OnnxplainError(f"input '{self.x.name}' must be a float array, got {x.dtype}")
        try:
            x = x.astype(self.x.dtype, copy=False)
        except TypeError:
            kind = onnx.helper.tensor_dtype_to_string(self.x.dtype) if isinstance(self.x.dtype, int) else self.x.dtype
            raise OnnxplainError(f"input '{self.x.name}' has an element type numpy cannot hold ({kind}); "
                                 "onnxplain cannot feed it") from None
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
        t = np.full(n, -1, dtype=np.int64) if target is None else as_array(target, "target")
        if not np.issubdtype(t.dtype, np.integer):
            raise OnnxplainError(f"target must be integer class indices, got {t.dtype}")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 or t.size == 1 else t.astype(np.int64)
        if t.shape != (n,):
            raise OnnxplainError(f"target must give one class per batch item ({n}), got shape {list(t.shape)}")
        c = self.num_classes
        if c is not None and (np.any(t >= c) or np.any(t < -1)):
            raise OnnxplainError(f"target {t.tolist()} out of range: the model has {c} classes (use -1 for argmax)")
        return np.ascontiguousarray(t)

    def check_baseline(self, baseline, x: np.ndarray) -> np.ndarray:
        """The baseline broadcast to ``x``'s shape, in its dtype; a one-line error when it cannot be."""
        try:
            b = np.asarray(baseline, x.dtype)
            if not np.all(np.isfinite(b)):
                raise OnnxplainError("the baseline contains NaN or infinite values")
            return np.ascontiguousarray(np.broadcast_to(b, x.shape))
        except (TypeError, ValueError):
            raise OnnxplainError(f"the baseline (shape {list(np.shape(baseline))}) does not broadcast to the "
                                 f"input's shape {list(x.shape)}") from None

    def check_weights(self, weights, x: np.ndarray) -> np.ndarray:
        w = as_array(weights, "target_weights")
        out = self.canonical.output(self.options.output)
        want = out.shape
        if want is not None and (w.ndim != len(want) or w.shape[:1] != x.shape[:1] or any(
                isinstance(d, int) and d > 0 and d != n for d, n in zip(want[1:], w.shape[1:]))):
            raise OnnxplainError(f"target_weights must have the explained output's shape {_fmt([len(x), *want[1:]])} "
                                 f"('{out.name}'), got {list(w.shape)}")
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise OnnxplainError(f"target_weights must be a float array, got {w.dtype}")
        if not np.all(np.isfinite(w)):
            raise OnnxplainError("target_weights contain NaN or infinite values")
        return np.ascontiguousarray(w.astype(x.dtype))

    def target(self, x: np.ndarray, target=None, target_weights=None) -> Target:
        """What to explain for the batch ``x``: one class per item (default: the arg-max) or a weight tensor."""
        if target_weights is not None:
            if target is not None:
                raise OnnxplainError("give either target or target_weights, not both")
            return Target(None, self.check_weights(target_weights, x), True)
        return Target(self.check_target(target, len(x)), None, target is not None)

    # ---- running --------------------------------------------------------------------------
    def feeds(self, x: np.ndarray, target: Target) -> dict:
        """The explanation graph's inputs for ``x`` and ``target``."""
        if target.weights is not None:
            return {self.x.name: x, "target_weights": target.weights}
        return {self.x.name: x, "target": target.classes}

    def run_graph(self, method: str, mode: str, feeds: dict, params: dict | None = None,
                  batch_size: int = 16) -> Explanation:
        """Run ``method``'s explanation graph (built with ``params``) over the batch axis in chunks."""
        params = params or {}
        if "baseline" in feeds and "baseline" not in {i.name for i in self.graph(method, mode, **params).graph.input}:
            feeds = {k: v for k, v in feeds.items() if k != "baseline"}
        sess = self._session(method, mode, params)
        names = [o.name for o in sess.get_outputs()]
        n = len(feeds[self.x.name])
        step = 1 if self.fixed_batch == 1 else max(1, batch_size)
        parts = [sess.run(names, {k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
        res = {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}
        outputs = {k: v for k, v in res.items() if k not in ("attribution", "target_index")}
        return Explanation(attribution=res["attribution"], target=res.get("target_index"), outputs=outputs)

    def run(self, x, method: str = "gradient", target=None, target_weights=None, *, progress=None,
            **options) -> Explanation:
        """Explain ``x`` ([N, ...]) with ``method``; returns attribution, explained targets and the outputs.

        ``method`` is any name or alias of the method table (:data:`onnxplain.methods.catalog.METHODS`;
        the README lists them with their options). ``target``: a class per item (``-1``: the arg-max);
        ``target_weights``: a weight tensor of the explained output's shape (the explained scalar is
        ``sum(w * output)``). ``options`` are the method's own (``steps=``, ``layer=``, ``window=``, ...)
        and ``batch_size``; an option the method does not take is an error, never ignored.
        ``progress(done, total)`` is called as long methods advance.
        """
        from onnxplain.methods.catalog import method as lookup

        m = lookup(method)
        opts = m.settings(options)
        x = self.check_input(x)
        t = self.target(x, target, target_weights)
        check_run_memory(self, x, opts.get("batch_size"), self.max_memory)
        with user_errors(f"{m.name} failed"):
            res = m.run(self, x, t, opts, progress)
        if t.given and t.classes is not None and self.num_classes is None:
            targets_in_range(t.classes, res.outputs, self.canonical.output(self.options.output).name,
                             self.options.class_axis)
        return res

    def explain(self, x, method: str = "gradient", target=None, **kw) -> np.ndarray:
        """The attribution for ``x`` as a numpy array (see :meth:`run` for the options)."""
        return self.run(x, method, target, **kw).attribution


def _fmt(shape):
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"
