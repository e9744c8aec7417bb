"""The zero-attribution guard: an attribution that is identically zero while the explained scalar
``F(x) = sum(w * output(x))`` visibly changes with ``x`` is a path the walker did not see (a
subgraph, a quantised op, an integer cast), not an answer. :func:`check_not_silently_zero` raises.

Dependence is read from central differences in the model's precision (float32 as a rule) along
random directions, ``d(h) = (F(x + h u) - F(x - h u)) / 2h``, at steps ``h/4, h, 4h, 16h``. It counts when
the change exceeds a tolerance relative to ``sum |w * output|`` *and* two neighbouring estimates
agree within a factor 2 (the linear regime). A step that crosses one discontinuity (an If switching branch, an
ArgMax) makes ``d`` scale like ``1/h`` instead, and a locally constant output gives no change at
all: in both cases a zero gradient is the right answer and the guard stays quiet. A staircase of
many small steps (a quantised path) reads as a slope at the larger steps, and the guard fires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from onnxplain.errors import OnnxplainError
from onnxplain.graph.builder import is_float

# op types that carry no cotangent to their inputs (integer results, quantisation, piecewise constants)
NO_GRADIENT = {
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "ArgMax",
    "ArgMin",
    "Round",
    "Floor",
    "Ceil",
    "Sign",
    "NonZero",
    "If",
    "Loop",
    "Scan",
}
# comparisons cut the gradient too, but only where a condition is computed: never the likely culprit
COMPARISONS = {"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}


def check_not_silently_zero(
    model,
    input_name: str,
    x: np.ndarray,
    weights: np.ndarray,
    attribution: np.ndarray,
    output: str | None = None,
    feeds: dict | None = None,
    directions: int = 2,
    step: float = 1e-2,
    rtol: float = 1e-4,
    seed: int = 0,
) -> None:
    """Raise :class:`OnnxplainError` when ``attribution`` is identically zero although
    ``sum(weights * output)`` depends on input ``input_name`` near ``x``.

    ``model``: a :class:`~onnxplain.graph.canonicalize.Canonical`, an ``onnx.ModelProto``, a path, or an
    ``onnxruntime.InferenceSession`` of the canonical model (then no node can be named).
    ``output``: the explained tensor (default: the first float output); ``weights`` has its shape.
    ``feeds``: values for the model's other inputs. ``step``: the middle step, relative to the RMS of
    ``x``; ``rtol``: the change that counts, relative to ``sum |weights * output(x)|``.
    """
    if np.any(np.asarray(attribution) != 0):
        return
    can, session, output = _open(model, input_name, output)
    x = np.asarray(x)
    x = x if x.dtype.kind == "f" else x.astype(np.float32)  # the model's own precision (float32 as a rule)
    w = np.asarray(weights, dtype=np.float64)
    feeds = dict(feeds or {})

    def F(v):
        y = session.run([output], {**feeds, input_name: v.astype(x.dtype)})[0]
        return float(np.sum(w * y.astype(np.float64))), float(np.sum(np.abs(w * y.astype(np.float64))))

    f0, scale = F(x)
    tol = rtol * scale + 1e-30
    h = step * max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-3)
    steps = (h / 4, h, 4 * h, 16 * h)
    rng = np.random.default_rng(seed)
    for _ in range(directions):
        u = rng.standard_normal(x.shape)
        d = [(F(x + hh * u)[0] - F(x - hh * u)[0]) / (2 * hh) for hh in steps]
        if any(abs(d[i]) * 2 * steps[i] > tol and 0.5 <= d[i + 1] / d[i] <= 2 for i in range(len(steps) - 1)):
            raise OnnxplainError(
                f"the attribution is identically zero, but the explained output '{output}' changes with input "
                f"'{input_name}' (directional derivative {d[0]:.3g} by finite differences, F(x) = {f0:.4g}): "
                f"{_suspects(can, input_name, output)}; a gradient method cannot explain this model as it is: "
                "use a perturbation method (occlusion, rise, lime, kernelshap)"
            )


def _open(model, input_name: str, output: str | None):
    """(Canonical or None, onnxruntime session, explained output name)."""
    from onnxplain.graph.canonicalize import Canonical, canonicalize, export_graph
    from onnxplain.runtime.session import make_session, ort

    ort = ort()
    if isinstance(model, ort.InferenceSession):
        names = [o.name for o in model.get_outputs()]
        output = output or names[0]
        if output not in names:
            raise OnnxplainError(f"the session has no output '{output}' (outputs: {names})")
        return None, model, output
    can = model if isinstance(model, Canonical) else canonicalize(str(model) if isinstance(model, Path) else model)
    out = can.output(output)
    m = export_graph(can.graph, can.model)
    if out.name not in {o.name for o in m.graph.output}:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(out.name))
    return can, make_session(m, providers=["CPUExecutionProvider"]), out.name


def _suspects(can, input_name: str, output: str) -> str:
    """Name the node where the walker's differentiable path from the input stops short of the
    output, and list the ops on the input-to-output path that carry no gradient."""
    if can is None:
        return "no graph was given to name the node that cuts the gradient (pass the canonical model)"
    from onnxplain.graph.backward import explained_path
    from onnxplain.graph.subgraphs import captured, subgraphs

    nodes = list(can.graph.nodes)
    fwd, path = explained_path(nodes, [input_name], [output])
    on_path = {id(n) for n in path}

    def inputs(n):  # every input, integer ones and captured ones too
        return list(n.inputs) + (captured(n) if subgraphs(n) else [])

    reach, active = {input_name}, []
    for n in nodes:
        if any(t.name in reach for t in inputs(n)):
            active.append(n)
            reach.update(t.name for t in n.outputs)
    back, depends = {output}, []
    for n in reversed(active):
        if any(t.name in back for t in n.outputs):
            depends.append(n)
            back.update(t.name for t in inputs(n))
    depends.reverse()
    cuts = [n for n in depends if id(n) not in on_path and any(t.name in fwd for t in inputs(n))]
    cut = next((n for n in cuts if n.op not in COMPARISONS), cuts[0] if cuts else None)
    kinds = sorted({_kind(n) for n in depends if _kind(n)})
    where = (
        f"the gradient path is likely cut at {cut.op} '{cut.name}'"
        if cut is not None
        else "the walker found no node that cuts the path"
    )
    listed = f"; ops on the path that carry no gradient: {', '.join(kinds)}" if kinds else ""
    return where + listed


def _kind(node) -> str | None:
    if node.op == "Cast" and not all(is_float(t) for t in node.outputs):
        return "Cast (to a non-float type)"
    return node.op if node.op in NO_GRADIENT else None
