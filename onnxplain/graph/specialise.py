"""Specialising a model before it is explained (design notes, "other inputs" and "shapes").

* :func:`bind` turns inputs the user feeds (recurrent state, a sample rate, an attention mask)
  into constants of the explanation: initializers that constant folding can propagate, so that an
  ``If`` on the sample rate folds to its branch;
* :func:`fix_shape` gives the explained input a concrete shape, so that sizes a rule needs (Resize
  on a symbolic height, pads computed from shapes) become static after folding;
* :func:`probe_shapes` fills the shapes that inference left unknown (graphs from Paddle's exporter
  lose ranks) from one onnxruntime run on a zero input of that concrete shape;
* :func:`promote` makes an inner float tensor (an embedding of token ids, or any ``input=`` that
  is not a graph input) the explained input: it becomes a graph input, fed by the caller.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxplain.errors import OnnxplainError

_NP = {v: k for k, v in helper.get_all_tensor_types().items()} if hasattr(helper, "get_all_tensor_types") else {}


def _np_dtype(elem_type: int):
    return helper.tensor_dtype_to_np_dtype(elem_type)


def _dims(vi) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def side_inputs(model: onnx.ModelProto, explained: str) -> list:
    """Graph inputs other than ``explained`` that have no default initializer: the user must feed them."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name != explained and vi.name not in inits]


def check_value(vi, value, what: str = "feed") -> np.ndarray:
    """``value`` as an array of input ``vi``'s dtype and declared shape; one-line errors otherwise."""
    dtype = _np_dtype(vi.type.tensor_type.elem_type)
    try:
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise TypeError
        if np.issubdtype(dtype, np.integer) and a.dtype.kind == "f" and not np.all(np.round(a) == a):
            raise OnnxplainError(f"{what} '{vi.name}' must hold integers ({np.dtype(dtype).name})")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise OnnxplainError(f"{what} '{vi.name}' contains NaN or infinite values")
        a = a.astype(dtype)
    except (TypeError, ValueError, OverflowError):
        raise OnnxplainError(f"{what} '{vi.name}' must be a numeric array of {np.dtype(dtype).name}") from None
    want = _dims(vi)
    if want is not None:
        if a.ndim != len(want) and a.size == 1 and len(want) > 0 and all(isinstance(d, int) and d == 1 for d in want):
            a = a.reshape(want)
        if a.ndim != len(want) or any(isinstance(d, int) and d > 0 and d != n for d, n in zip(want, a.shape)):
            shown = "[" + ", ".join(str(d) if d is not None else "?" for d in want) + "]"
            raise OnnxplainError(f"{what} '{vi.name}' expects shape {shown}, got {list(a.shape)}")
    return a


def bind(model: onnx.ModelProto, values: dict) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs named in ``values`` are initializers holding those values."""
    inputs = {vi.name: vi for vi in model.graph.input}
    unknown = [k for k in values if k not in inputs]
    if unknown:
        raise OnnxplainError(
            f"the model has no input named {', '.join(map(repr, unknown))} (inputs: {', '.join(inputs)})"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [vi for vi in out.graph.input if vi.name not in values]
    arrays = {k: check_value(inputs[k], v) for k, v in values.items()}
    inits = [t for t in out.graph.initializer if t.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits + [numpy_helper.from_array(a, k) for k, a in arrays.items()])
    return out


def fix_shape(model: onnx.ModelProto, name: str, shape, keep_batch: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` whose input ``name`` has the concrete ``shape`` (None for an axis: as declared;
    the batch axis stays symbolic when ``keep_batch`` and it was)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    vi = next((v for v in out.graph.input if v.name == name), None)
    if vi is None:
        raise OnnxplainError(f"the model has no input named '{name}'")
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise OnnxplainError(f"input '{name}' has rank {len(dims)}, and the shape given has {len(shape)} axes")
    for i, (d, n) in enumerate(zip(dims, shape)):
        if n is None:  # this axis stays as the model declares it
            continue
        if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != n:
            raise OnnxplainError(f"input '{name}' has {d.dim_value} on axis {i}, not {n}")
        if i == 0 and keep_batch and not (d.HasField("dim_value") and d.dim_value > 0):
            continue
        d.Clear()
        d.dim_value = int(n)
    del out.graph.value_info[:]  # re-inferred from the new shape
    return out


def unknown_shapes(model: onnx.ModelProto) -> list:
    """Names of node outputs whose rank shape inference did not find."""
    known = {
        vi.name
        for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
        if vi.type.tensor_type.HasField("shape")
    }
    known |= {t.name for t in model.graph.initializer}
    return [o for n in model.graph.node for o in n.output if o and o not in known]


def probe_shapes(
    model: onnx.ModelProto, feeds: dict | list, names=None, replace_outputs: bool = False, varying: str | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` with the shapes of ``names`` (default: every tensor whose rank is unknown)
    written into ``value_info`` as onnxruntime computes them on ``feeds``; ``replace_outputs``: a graph
    output whose declared rank differs from the computed one gets the computed shape. ``feeds`` may be a
    list of feeds (e.g. batches of 1 and 2): an axis whose size differs between the runs is written as the
    symbol ``varying`` (else unknown), so that a dynamic batch does not become the probe's batch
    (onnxruntime plans its buffers by declared shapes). The first feeds must run; the others are skipped
    where the model refuses them (a state input of batch 1 beside the probed one)."""
    from onnxplain.runtime.session import make_session

    names = unknown_shapes(model) if names is None else list(names)
    if not names:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for n in names:
        if n not in outputs:
            probe.graph.output.append(helper.make_empty_tensor_value_info(n))
    feeds = feeds if isinstance(feeds, list) else [feeds]
    try:
        sess = make_session(probe)
        runs = [sess.run(names, feeds[0])]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise OnnxplainError(
            f"shape inference left ranks unknown, and a probe run of the model failed: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    for f in feeds[1:]:  # other sizes: only where the model runs at them (side inputs may fix the batch)
        with contextlib.suppress(Exception):  # onnxruntime's own types; then no axis is known to vary
            runs.append(sess.run(names, f))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {vi.name for vi in out.graph.value_info}
    declared = {vi.name: vi for vi in out.graph.output}
    for j, n in enumerate(names):
        a = np.asarray(runs[0][j])
        shape = [d if all(np.shape(r[j])[i] == d for r in runs) else varying for i, d in enumerate(a.shape)]
        if n in declared:
            vi = declared[n]
            dims = _dims(vi)
            wrong = (
                dims is None or len(dims) != a.ndim or any(isinstance(d, int) and d != k for d, k in zip(dims, shape))
            )
            if replace_outputs and wrong:
                vi.CopyFrom(helper.make_tensor_value_info(n, vi.type.tensor_type.elem_type, shape))
            continue
        vi = helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), shape)
        if n in have:
            next(v for v in out.graph.value_info if v.name == n).CopyFrom(vi)
        else:
            out.graph.value_info.append(vi)
    return out


def promote(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """A copy of ``model`` where the inner tensor ``tensor`` is a graph input (its producer no longer
    feeds it); the original inputs stay, to be bound by the caller."""
    from onnxplain.graph.canonicalize import infer_shapes

    m = infer_shapes(model)
    vi = next((v for v in list(m.graph.value_info) + list(m.graph.output) if v.name == tensor), None)
    if vi is None or not vi.type.tensor_type.HasField("elem_type"):
        raise OnnxplainError(f"cannot explain inner tensor '{tensor}': its type is unknown")
    out = onnx.ModelProto()
    out.CopyFrom(m)
    for node in out.graph.node:
        for i, o in enumerate(node.output):
            if o == tensor:
                node.output[i] = f"{tensor}__onnxplain_replaced"
    new = onnx.ValueInfoProto()
    new.CopyFrom(vi)
    out.graph.input.insert(0, new)
    return out


def first_float(model: onnx.ModelProto, start: str) -> str | None:
    """The first float tensor computed from input ``start`` (an embedding lookup, a OneHot, a Cast),
    following only integer tensors until one is found; None when there is none."""
    from onnxplain.graph.canonicalize import infer_shapes

    m = infer_shapes(model)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)
    }
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    frontier = {start}
    for node in m.graph.node:  # nodes are topologically sorted in a valid model
        if not frontier.intersection(node.input):
            continue
        for o in node.output:
            if types.get(o) in floats:
                return o
            if o:
                frontier.add(o)
    return None


def specialised(model: onnx.ModelProto, name: str | None, shape, keep_batch: bool = True) -> onnx.ModelProto:
    """``model`` with input ``name`` fixed to ``shape`` (None: unchanged), and the ranks that shape
    inference still leaves unknown probed with one run on a zero input of that shape (batch 1
    where the batch axis is dynamic)."""
    if shape is None or name is None:
        return model
    fixed = fix_shape(model, name, shape, keep_batch)
    from onnxplain.graph.canonicalize import infer_shapes

    inferred = infer_shapes(fixed)
    if not unknown_shapes(inferred):
        return fixed
    vi = next(v for v in fixed.graph.input if v.name == name)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
    zero = np.zeros(dims, dtype=_np_dtype(vi.type.tensor_type.elem_type))
    return probe_shapes(inferred, {name: zero})
