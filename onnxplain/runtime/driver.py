"""Batched scoring of perturbed inputs through onnxruntime: the engine of the black-box methods.

``Driver(model).scores(xs, target)`` runs the model on ``xs`` ([M, ...], M perturbed copies of
inputs) and returns, per row, the explained scalar: the logit of ``target`` (the tensor under a
final Softmax/LogSoftmax/Sigmoid, as for the gradient methods) or, with ``probabilities=True``,
the explained output itself at ``target``. Axes other than batch and class are summed.

Batching. Rows run ``batch_size`` at a time; ``batch_size=None`` starts at :data:`CAP` and halves
whenever onnxruntime fails to allocate, remembering the size that worked. A model exported with
a fixed batch of 1 is rewritten with a symbolic batch (input, outputs; inner shapes dropped) and
the rewrite is trusted only if a batch of 2 gives the same numbers as two single runs (a
``Reshape`` to a hard-coded ``[1, ...]`` fails this); otherwise the original model runs one row
at a time. Any other fixed batch ``B`` runs ``B`` rows at a time, padding the last run.

On CUDA (:func:`onnxplain.runtime.session.cuda_usable`) the session uses the CUDA provider and I/O binding
(inputs copied once, outputs bound to the CPU); on the CPU a plain ``session.run``.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from onnxplain.errors import OnnxplainError

CAP = 64  # the first batch size tried when none is given
SCORE = "driver_logits"  # the extra output: the explained tensor
BATCH = "driver_batch"  # the symbolic batch dimension of a rewritten fixed-batch-1 model


def _graph(canonical, output, probabilities, batch_symbol: bool):
    """The model with the explained tensor as an extra output ``driver_logits``; optionally with a
    symbolic batch (input and outputs; every inner shape dropped for re-inference)."""
    from onnxplain.graph.builder import Builder, np_dtype
    from onnxplain.graph.canonicalize import canonicalize, export_graph, find_logits

    can = canonicalize(canonical.model if hasattr(canonical, "model") else canonical)
    g = can.graph
    out = can.output(output)
    logits = out if probabilities else find_logits(g, out)[0]
    if SCORE in g.tensors():
        raise OnnxplainError(f"the model already has a tensor named '{SCORE}'; this name is reserved")
    b = Builder(g, can.opset)
    o = b.Identity(logits)
    o.name, o.dtype, o.shape = SCORE, np_dtype(logits), logits.shape
    g.outputs = list(g.outputs) + [o]
    if batch_symbol:
        import onnx_graphsurgeon as gs

        ins = set(id(t) for t in g.inputs)
        for t in g.tensors().values():
            if isinstance(t, gs.Variable) and id(t) not in ins and t not in g.outputs:
                t.shape = None
        for t in list(g.inputs) + list(g.outputs):
            if t.shape and t.shape[0] == 1:
                t.shape = [BATCH] + list(t.shape[1:])
            elif t in g.outputs:
                t.shape = None
    g.cleanup()
    g.toposort()
    return export_graph(g, can.model)


@functools.lru_cache(maxsize=2)
def _blas_controller(_scipy_loaded: bool):
    from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

    return ThreadpoolController()  # finds the BLAS libraries loaded now (numpy's; scipy's once imported)


def one_blas_thread():
    """A context in which numpy's and scipy's BLAS run on one thread (threadpoolctl).

    The black-box methods' own linear algebra is small (a ridge or least-squares fit on [S, K], RISE's
    mask products) and runs between onnxruntime calls. A multi-threaded OpenBLAS call there starts its
    pool, whose threads busy-wait on the cores that onnxruntime's next run needs; on 2 loaded cores a
    [2048, 49] ``lstsq`` took about 10 ms that way and 1.3 ms on one thread."""
    return _blas_controller("scipy.linalg" in sys.modules).limit(limits=1, user_api="blas")


def _is_alloc_error(e: Exception) -> bool:
    s = str(e).lower()
    return any(k in s for k in ("alloc", "out of memory", "bad_alloc", "cudnn_status_alloc", "cuda failure 2"))


class Driver:
    """Scores batches of perturbed inputs of one model (see the module docstring)."""

    def __init__(
        self,
        canonical_or_model,
        output: str | None = None,
        probabilities: bool = False,
        providers: list[str] | None = None,
        input: str | None = None,
        class_axis: int | None = None,
    ):
        from onnxplain.graph.canonicalize import canonicalize
        from onnxplain.runtime.session import cuda_usable, make_session

        can = (
            canonical_or_model
            if hasattr(canonical_or_model, "graph") and hasattr(canonical_or_model, "opset")
            else canonicalize(canonical_or_model)
        )
        self.canonical = can
        self.output, self.probabilities, self.class_axis = output, probabilities, class_axis
        self.providers = providers
        x = can.input(input)
        self.x_name = x.name
        d = x.shape[0] if x.shape else None
        self.fixed = d if isinstance(d, int) and d > 0 else None
        self._make = lambda m: make_session(m, providers)
        self.session = self._make(_graph(can, output, probabilities, False))
        self.other_inputs = [i.name for i in self.session.get_inputs() if i.name != self.x_name]
        if self.other_inputs:
            raise OnnxplainError(f"the black-box driver feeds one input; the model also needs {self.other_inputs}")
        self.names = [o.name for o in self.session.get_outputs()]
        self.batched = None  # the rewritten fixed-batch-1 session once verified; False: not batchable
        self.batch_size = None  # the largest batch known to fit
        self.cuda = "CUDAExecutionProvider" in self.session.get_providers() and cuda_usable()

    # ---- running ----------------------------------------------------------------------------------
    def _run(self, sess, xs: np.ndarray) -> list[np.ndarray]:
        xs = np.ascontiguousarray(xs)
        if not self.cuda:
            return sess.run(self.names, {self.x_name: xs})
        io = sess.io_binding()
        io.bind_cpu_input(self.x_name, xs)
        for n in self.names:
            io.bind_output(n, "cpu")
        sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()

    def _try_batchable(self, sample: np.ndarray) -> bool:
        """Rewrite a fixed-batch-1 model to a symbolic batch; keep it if 2 rows == 2 single runs."""
        if self.batched is None:
            self.batched = False
            try:
                sess = self._make(_graph(self.canonical, self.output, self.probabilities, True))
                two = np.ascontiguousarray(np.concatenate([sample[:1], sample[-1:]]))
                both = self._run(sess, two)
                singles = [self._run(self.session, two[i : i + 1]) for i in range(2)]
                ok = all(
                    b.shape[:1] == (2,) and np.array_equal(b, np.concatenate([s[j] for s in singles]))
                    for j, b in enumerate(both)
                )
                if ok:
                    self.batched = sess
            except Exception:  # noqa: BLE001 -- any failure: the graph is not batchable
                self.batched = False
        return bool(self.batched)

    def outputs_rows(self, rows, n: int, batch_size: int | None = None, progress=None) -> dict:
        """Run ``n`` rows made chunk by chunk by ``rows(start, stop) -> [k, ...]``; returns every
        output (``driver_logits`` included) concatenated over the rows."""
        sess, step, pad = self.session, None, False
        if self.fixed == 1:
            if n > 1 and self._try_batchable(rows(0, min(n, 2))):
                sess = self.batched
            else:
                step = 1
        elif self.fixed:
            step, pad = self.fixed, True
        if step is None:
            step = batch_size or self.batch_size or CAP
        parts, i = [], 0
        while i < n:
            j = min(i + step, n)
            xs = rows(i, j)
            k = len(xs)
            if pad and k < step:
                xs = np.concatenate([xs, np.repeat(xs[-1:], step - k, 0)])
            try:
                res = self._run(sess, xs)
            except Exception as e:  # noqa: BLE001
                if step > 1 and not pad and batch_size is None and _is_alloc_error(e):
                    step //= 2
                    continue
                raise
            if not pad and batch_size is None and step > 1:
                self.batch_size = step  # fits: later calls start here
            parts.append([r[:k] for r in res])
            i = j
            if progress is not None:
                progress(i, n)
        if not parts:
            return {name: np.zeros((0,)) for name in self.names}
        return {name: np.concatenate([p[q] for p in parts]) for q, name in enumerate(self.names)}

    def outputs(self, xs: np.ndarray, batch_size: int | None = None, progress=None) -> dict:
        """Every output of the model for ``xs`` [M, ...] (plus ``driver_logits``)."""
        return self.outputs_rows(lambda i, j: xs[i:j], len(xs), batch_size, progress)

    # ---- scores -----------------------------------------------------------------------------------
    def class_axis_of(self, y: np.ndarray) -> int:
        r = y.ndim
        if r < 2:
            raise OnnxplainError("the explained output needs a batch axis and a class axis")
        from onnxplain.validate import class_axis

        return class_axis(self.class_axis, r)

    def per_class(self, y: np.ndarray) -> np.ndarray:
        """[M, C]: the explained tensor summed over every axis but batch and class (float64)."""
        ax = self.class_axis_of(y)
        others = tuple(i for i in range(1, y.ndim) if i != ax)
        y = y.astype(np.float64)
        return y.sum(axis=others) if others else y

    def score_rows(self, rows, n: int, target, batch_size: int | None = None, progress=None) -> np.ndarray:
        """Scores of ``n`` rows made by ``rows(start, stop)``; ``target`` an int or one per row
        (-1 = each row's own argmax). Returns float64 [n]."""
        t = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return out
        res = self.outputs_rows(rows, n, batch_size, progress)[SCORE]
        y = self.per_class(res)
        tt = np.where(t < 0, y.argmax(axis=1), t)
        if np.any(tt >= y.shape[1]):
            raise OnnxplainError(f"target out of range: the model has {y.shape[1]} classes")
        out[:] = y[np.arange(n), tt]
        return out

    def scores(self, xs: np.ndarray, target, batch_size: int | None = None, progress=None) -> np.ndarray:
        """The explained scalar of each row of ``xs`` [M, ...] (see the module docstring)."""
        xs = np.asarray(xs)
        return self.score_rows(lambda i, j: xs[i:j], len(xs), target, batch_size, progress)


def for_explainer(explainer) -> Driver:
    """The Explainer's shared driver (built once; the black-box methods all use it)."""
    drivers = explainer.__dict__.setdefault("_drivers", {})
    if "driver" not in drivers:
        o = explainer.options
        drivers["driver"] = Driver(
            explainer.canonical,
            output=o.output,
            probabilities=o.probabilities,
            providers=explainer.providers,
            input=o.input,
            class_axis=o.class_axis,
        )
    return drivers["driver"]


def class_scores(drv: Driver, y: np.ndarray, targets: np.ndarray, score: str = "logit") -> np.ndarray:
    """Row scores from the explained tensor ``y`` [M, ...] at ``targets`` [M] (resolved, >= 0):
    ``score="softmax"`` takes the softmax over the classes first (unless the driver already explains
    probabilities, or there is one class only: its softmax is the constant 1), ``"logit"`` the value
    itself. float64 [M]."""
    if score not in ("softmax", "logit"):
        raise OnnxplainError(f"score must be 'softmax' or 'logit', not '{score}'")
    z = drv.per_class(y)
    bad = np.asarray(targets)[(np.asarray(targets) >= z.shape[1]) | (np.asarray(targets) < 0)]
    if bad.size:
        raise OnnxplainError(
            f"target {int(bad[0])} out of range: the explained output has {z.shape[1]} classes at run time"
        )
    if score == "softmax" and not drv.probabilities and z.shape[1] > 1:  # a softmax over one class is 1
        e = np.exp(z - z.max(axis=1, keepdims=True))
        z = e / e.sum(axis=1, keepdims=True)
    return z[np.arange(len(z)), targets]


def weighted_scores(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum(w * y)`` per row: the explained scalar of a weights target (design notes, "target").
    ``y`` [M, ...] the explained tensor, ``w`` of the same shape. float64 [M]."""
    m = len(y)
    return np.einsum("mk,mk->m", np.asarray(y, np.float64).reshape(m, -1), np.asarray(w, np.float64).reshape(m, -1))


def scorer(drv: Driver, y0: np.ndarray, classes, weights, score: str = "softmax"):
    """How a black-box method scores rows: ``(chosen, f)`` for the unperturbed explained tensor ``y0``
    [N, ...]. ``f(y, items)`` -> float64 [M] scores rows ``y`` [M, ...] that are perturbed copies of
    the items ``items`` (int [M]). Classes (``-1``: each item's arg-max): :func:`class_scores`;
    weights (a seed of ``y0``'s shape): ``sum(w * y)``, linear in the explained tensor (no softmax)
    and ``chosen`` is None."""
    n = len(y0)
    if weights is not None:
        w = np.asarray(weights, np.float64)
        if w.shape != y0.shape:
            raise OnnxplainError(
                f"target weights of shape {list(w.shape)} do not match the explained output {list(y0.shape)}"
            )
        return None, lambda y, items: weighted_scores(y, w[np.asarray(items)])
    z = drv.per_class(y0)
    t = np.full(n, -1, dtype=np.int64) if classes is None else np.broadcast_to(np.asarray(classes, np.int64), (n,))
    if np.any(t >= z.shape[1]):
        raise OnnxplainError(f"target {t.tolist()} out of range: the explained output has {z.shape[1]} classes")
    chosen = np.where(t < 0, z.argmax(axis=1), t).astype(np.int64)
    return chosen, lambda y, items: class_scores(drv, y, chosen[np.asarray(items)], score)
