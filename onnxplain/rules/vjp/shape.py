"""VJPs of data-movement ops: values are moved back to where they came from, and summed where
the forward copied one value to several places (Expand, Tile, Gather with repeated indices, the
border of an edge/reflect/wrap Pad).

Every op here is linear in its data input, so each VJP is the transpose of a selection or
replication. Shapes are used statically where known, else read with ``Shape`` at run time, so a
dynamic batch axis is fine everywhere.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import np_dtype, rank, static_shape
from onnxplain.rules.vjp import attr, vjp

INT_MAX = int(np.iinfo(np.int64).max)
INT_MIN = int(np.iinfo(np.int64).min)


# ---- helpers shared by the shape-like rules (also used by resize.py) ------------------------
def text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def dim(t, axis: int) -> int | None:
    """The static size of ``t`` along ``axis``, or None."""
    shape = getattr(t, "shape", None)
    d = None if shape is None else shape[axis]
    return d if isinstance(d, int) and d >= 0 else None


def const_value(t) -> np.ndarray | None:
    """The value of a constant input; None for a run-time tensor or an empty optional input."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    return None


def known_rank(node, t) -> int:
    r = rank(t)
    if r is None:
        raise ShapeError(f"{node.op} '{node.name}': the rank of '{t.name}' must be known")
    return r


def input_or_none(node, i):
    """``node.inputs[i]``, or None when absent or an empty optional input."""
    if i >= len(node.inputs) or not node.inputs[i].name:
        return None
    return node.inputs[i]


def dim_piece(b, t, axis: int, static: int | None = None):
    """``t``'s size along ``axis``: an int when known, else a 1-element int64 tensor."""
    d = static if static is not None else dim(t, axis)
    return d if d is not None else b.shape_of(t, axis, axis + 1)


def shape_vector(b, pieces):
    """A 1-D int64 shape from pieces that are ints or 1-element int64 tensors."""
    if all(isinstance(p, (int, np.integer)) for p in pieces):
        return b.ints([int(p) for p in pieces])
    parts, run = [], []
    for p in pieces:
        if isinstance(p, (int, np.integer)):
            run.append(int(p))
            continue
        if run:
            parts.append(b.ints(run))
            run = []
        parts.append(p)
    if run:
        parts.append(b.ints(run))
    return b.Concat(*parts, axis=0) if len(parts) > 1 else parts[0]


def zeros(b, shape, like):
    """Zeros of ``shape`` (a 1-D int64 tensor) typed like ``like``."""
    dt = np_dtype(like)
    return b.emit("ConstantOfShape", shape, value=gs.Constant(b.name("zero"), np.zeros([1], dtype=dt)), dtype=dt)


def zeros_like(b, t):
    """Zeros shaped like the forward tensor ``t`` (ConstantOfShape: nothing big is stored)."""
    s = static_shape(t)
    return zeros(b, b.ints(s) if s is not None else b.Shape(t), t)


def flip(b, t, axis: int):
    return b.slice(t, [-1], [INT_MIN], [axis], [-1])


def sl(b, t, axis: int, start: int, end: int | None = None):
    """``t[start:end]`` along ``axis`` (None: to the end)."""
    return b.slice(t, [start], [INT_MAX if end is None else end], [axis])


def apply_matrix(b, g, A: np.ndarray, axis: int, r: int, like):
    """Contract axis ``axis`` of ``g`` with the first axis of ``A``: out[.., i, ..] = sum_o A[o, i] g[.., o, ..].

    The last axis is one MatMul; the last-but-one a MatMul with A^T on the left; other axes
    are swapped to the end and back.
    """
    if axis == r - 1:
        return b.MatMul(g, b.const(A, like=like))
    if axis == r - 2:
        return b.MatMul(b.const(np.ascontiguousarray(A.T), like=like), g)
    perm = list(range(r))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return b.transpose(b.MatMul(b.transpose(g, perm), b.const(A, like=like)), perm)


# ---- pure reshapes and permutations -------------------------------------------------------
@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(b, node, g):
    """A reshape moves no value: dx = reshape(g, shape(x))."""
    x = node.inputs[0]
    s = static_shape(x)
    target = b.ints(s) if s is not None else b.Shape(x)
    return [b.Reshape(g[0], target, allowzero=1 if b.opset >= 14 else None)]


@vjp("Transpose")
def transpose(b, node, g):
    """y = transpose(x, p): dx = transpose(g, p^-1); the default p reverses the axes."""
    perm = attr(node, "perm") or list(reversed(range(known_rank(node, node.inputs[0]))))
    return [b.transpose(g[0], np.argsort(perm).tolist())]


@vjp("DepthToSpace", "SpaceToDepth")
def depth_space(b, node, g):
    """Both are permutations of elements, so the VJP is the inverse permutation.

    SpaceToDepth inverts DepthToSpace in DCR mode. For CRD, y[n, c, h*s+i, w*s+j] =
    x[n, c*s*s + i*s + j, h, w]: reshape g to [N, C', H, s, W, s], move the two s axes behind C'.
    """
    x, s = node.inputs[0], attr(node, "blocksize")
    if node.op == "SpaceToDepth":
        return [b.DepthToSpace(g[0], blocksize=s, mode="DCR")]
    if text(attr(node, "mode", "DCR")) == "DCR":
        return [b.SpaceToDepth(g[0], blocksize=s)]
    y = node.outputs[0]
    six = shape_vector(b, [dim_piece(b, x, 0), dim_piece(b, y, 1), dim_piece(b, x, 2), s, dim_piece(b, x, 3), s])
    t = b.transpose(b.Reshape(g[0], six), [0, 1, 3, 5, 2, 4])
    s4 = static_shape(x)
    return [b.Reshape(t, b.ints(s4) if s4 is not None else b.Shape(x))]


# ---- concatenation and splitting ------------------------------------------------------------
@vjp("Concat")
def concat(b, node, g):
    """y = concat(x_1..x_n): dx_k = g[o_k : o_k + d_k] along the axis (sizes read at run time if unknown)."""
    axis = attr(node, "axis") % known_rank(node, node.inputs[0])
    xs = node.inputs
    if len(xs) == 1:
        return [g[0]]
    sizes = [dim(x, axis) for x in xs]
    if all(d is not None for d in sizes):
        return list(b.split(g[0], sizes, axis))
    grads, start = [], b.ints([0])
    for x in xs:
        end = b.Add(start, b.shape_of(x, axis, axis + 1))
        grads.append(b.emit("Slice", g[0], start, end, b.ints([axis])))
        start = end
    return grads


@vjp("Split")
def split(b, node, g):
    """The outputs tile x along the axis: dx = concat(g_k), zeros for an output without cotangent."""
    axis = attr(node, "axis", 0) % known_rank(node, node.inputs[0])
    parts = [gk if gk is not None else zeros_like(b, y) for gk, y in zip(g, node.outputs)]
    return [b.Concat(*parts, axis=axis) if len(parts) > 1 else parts[0], None]


# ---- Slice ------------------------------------------------------------------------------------
def slice_indices(d: int, start: int, end: int, step: int) -> np.ndarray:
    """The indices ONNX Slice keeps along an axis of size ``d``: the spec's clamping, and
    onnxruntime's reading of end = INT64_MAX with a negative step as "through index 0"."""
    if step == 0:
        raise OnnxplainError("Slice with step 0")
    if step < 0 and end == INT_MAX:
        end = INT_MIN
    start = start + d if start < 0 else start
    end = end + d if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
    else:
        start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
    return np.arange(start, end, step, dtype=np.int64)


def _slice_entries(b, node):
    """[(axis, start, end, step)]: ints where constant, else 1-element int64 tensors."""
    x = node.inputs[0]
    r = known_rank(node, x)
    starts, ends, axes, steps = (input_or_none(node, i) for i in (1, 2, 3, 4))
    if axes is not None and const_value(axes) is None:
        raise ShapeError(f"Slice '{node.name}': the axes must be constant")
    n = len(const_value(starts)) if const_value(starts) is not None else dim(starts, 0)
    if n is None:
        raise ShapeError(f"Slice '{node.name}': the number of sliced axes must be known")
    ax = [int(a) % r for a in const_value(axes)] if axes is not None else list(range(n))

    def entry(t, i, default):
        if t is None:
            return default
        v = const_value(t)
        return int(v[i]) if v is not None else b.slice(t, [i], [i + 1], [0])

    return [(ax[i], entry(starts, i, 0), entry(ends, i, INT_MAX), entry(steps, i, 1)) for i in range(n)]


@vjp("Slice")
def slice_(b, node, g):
    """dx = the cotangent scattered into zeros at the kept indices, axis by axis.

    Contiguous slices (step +-1) of a static axis become one Pad (after a flip for step -1);
    strided ones a ScatterElements along the axis. Indices follow the spec's clamping; when the
    axis size or the slice bounds are only known at run time, the kept indices are computed as
    Slice(Range(0, d)) with the node's own bounds.
    """
    x, y = node.inputs[0], node.outputs[0]
    r = known_rank(node, x)
    cur, shape = g[0], list(y.shape) if y.shape is not None else [None] * r
    pads = [0] * (2 * r)
    for axis, start, end, step in _slice_entries(b, node):
        d = dim(x, axis)
        static = d is not None and all(isinstance(v, int) for v in (start, end, step))
        if static:
            idx = slice_indices(d, start, end, step)
            if idx.size == 0:
                return [zeros_like(b, x)] + [None] * 4
            if abs(step) == 1:
                if step < 0:
                    cur = flip(b, cur, axis)
                pads[axis], pads[r + axis] = int(idx.min()), int(d - 1 - idx.max())
                continue
            idx_t = b.const(idx)
        else:
            seq = b.Range(b.const(np.int64(0)), dim_scalar(b, x, axis), b.const(np.int64(1)))
            idx_t = b.emit(
                "Slice",
                seq,
                *(v if not isinstance(v, int) else b.ints([v]) for v in (start, end)),
                b.ints([0]),
                step if not isinstance(step, int) else b.ints([step]),
            )
        pieces = [shape[k] if isinstance(shape[k], int) else b.shape_of(cur, k, k + 1) for k in range(r)]
        index_shape = [1] * r
        index_shape[axis] = -1
        indices = b.Expand(b.Reshape(idx_t, b.ints(index_shape)), shape_vector(b, pieces))
        pieces[axis] = dim_piece(b, x, axis)
        cur = b.ScatterElements(zeros(b, shape_vector(b, pieces), x), indices, cur, axis=axis)
        shape[axis] = d
    if any(pads):
        cur = b.Pad(cur, b.ints(pads))
    return [cur] + [None] * 4


# ---- gathers ----------------------------------------------------------------------------------
def dim_scalar(b, x, axis):
    """``x``'s size along ``axis`` as a 0-d int64 tensor."""
    d = dim(x, axis)
    return b.const(np.int64(d)) if d is not None else b.squeeze(b.shape_of(x, axis, axis + 1), [0])


def _normalized_indices(b, idx, x, axis):
    """Indices with negatives wrapped: numpy for constants (when wrapping needs no run-time size),
    else a Where at run time."""
    v, d = const_value(idx), dim(x, axis)
    if v is not None and (d is not None or not np.any(v < 0)):
        return np.where(v < 0, v + (d or 0), v).astype(np.int64)
    it = idx if np_dtype(idx) == np.int64 else b.Cast(idx, to=onnx.TensorProto.INT64)
    return b.Where(b.Less(it, b.const(np.int64(0))), b.Add(it, dim_scalar(b, x, axis)), it)


def _float_type(t):
    return onnx.helper.np_dtype_to_tensor_dtype(np_dtype(t))


@vjp("Gather")
def gather(b, node, g):
    """y = take(x, idx, axis): dx[.., j, ..] = sum over positions p with idx[p] = j of g[.., p, ..].

    A scalar index (e.g. the class token x[:, 0]) is an Unsqueeze and a Pad. Otherwise the index
    axes are moved to the front and the cotangent is scattered with ScatterND into zeros
    ([d, rest]); repeated (or run-time) indices need reduction='add' (opset 16), before that the
    sum is a MatMul with the one-hot matrix [j = idx[p]] of shape [d, K].
    """
    x, idx = node.inputs
    r = known_rank(node, x)
    axis = attr(node, "axis", 0) % r
    d = dim(x, axis)
    iv = _normalized_indices(b, idx, x, axis)
    q = iv.ndim if isinstance(iv, np.ndarray) else rank(idx)
    if q is None:
        raise ShapeError(f"Gather '{node.name}': the rank of the indices must be known")
    if isinstance(iv, np.ndarray) and q == 0 and d is not None:
        pads = [0] * (2 * r)
        pads[axis], pads[r + axis] = int(iv), d - 1 - int(iv)
        return [b.Pad(b.unsqueeze(g[0], [axis]), b.ints(pads)), None]
    # cotangent laid out as [I..., pre..., post...], data as [d, pre..., post...]
    gperm = list(range(axis, axis + q)) + list(range(axis)) + list(range(axis + q, r - 1 + q))
    xperm = [axis] + list(range(axis)) + list(range(axis + 1, r))
    upd = b.transpose(g[0], gperm) if gperm != list(range(len(gperm))) else g[0]
    xs = static_shape(x)
    dshape = b.ints([xs[p] for p in xperm]) if xs is not None else b.Gather(b.Shape(x), b.ints(xperm))
    unique = isinstance(iv, np.ndarray) and len(np.unique(iv)) == iv.size
    if unique or b.opset >= 16:
        indices = b.const(iv[..., None]) if isinstance(iv, np.ndarray) else b.unsqueeze(iv, [-1])
        out = b.ScatterND(zeros(b, dshape, x), indices, upd, reduction=None if unique else "add")
    else:
        if isinstance(iv, np.ndarray) and d is not None:
            onehot = b.const(np.arange(d)[:, None] == iv.reshape(1, -1), like=x)
        else:
            seq = b.Range(b.const(np.int64(0)), dim_scalar(b, x, axis), b.const(np.int64(1)))
            flat_idx = b.const(iv.reshape(1, -1)) if isinstance(iv, np.ndarray) else b.Reshape(iv, b.ints([1, -1]))
            onehot = b.Cast(b.Equal(b.unsqueeze(seq, [1]), flat_idx), to=_float_type(x))
        out = b.Reshape(b.MatMul(onehot, b.Flatten(upd, axis=q)), dshape)
    return [b.transpose(out, np.argsort(xperm).tolist()) if axis else out, None]


@vjp("GatherElements")
def gather_elements(b, node, g):
    """y[.., p, ..] = x[.., idx[.., p, ..], ..]: dx = ScatterElements(0, idx, g, reduction='add').

    Before opset 16 unique constant indices scatter without reduction; otherwise the sum over
    matching positions is written with a one-hot mask: dx[.., j, ..] = sum_p g[.., p, ..] [idx = j].
    """
    x, idx = node.inputs
    r = known_rank(node, x)
    axis = attr(node, "axis", 0) % r
    iv = _normalized_indices(b, idx, x, axis)
    unique = isinstance(iv, np.ndarray) and not np.any(np.diff(np.sort(iv, axis=axis), axis=axis) == 0)
    indices = b.const(iv) if isinstance(iv, np.ndarray) else iv
    if unique or b.opset >= 16:
        return [
            b.ScatterElements(zeros_like(b, x), indices, g[0], axis=axis, reduction=None if unique else "add"),
            None,
        ]
    seq_shape = [1] * (r + 1)
    seq_shape[axis + 1] = -1
    seq = b.Reshape(b.Range(b.const(np.int64(0)), dim_scalar(b, x, axis), b.const(np.int64(1))), b.ints(seq_shape))
    mask = b.Cast(b.Equal(b.unsqueeze(indices, [axis + 1]), seq), to=_float_type(x))
    gx = b.reduce("ReduceSum", b.Mul(b.unsqueeze(g[0], [axis + 1]), mask), [axis], keepdims=False)
    xs, ishape = static_shape(x), static_shape(idx)
    if xs is not None and ishape is not None and ishape != xs:
        gx = b.Pad(gx, b.ints([0] * r + [xs[k] - (ishape[k] if k != axis else xs[k]) for k in range(r)]))
    return [gx, None]


# ---- padding and replication --------------------------------------------------------------
def _pad_amounts(node, r):
    """(begin, end) pad per axis from the pads (and, from opset 18, axes) inputs."""
    pads, axes = const_value(input_or_none(node, 1)), input_or_none(node, 3)
    if pads is None:
        raise ShapeError(f"Pad '{node.name}': the pads must be constant")
    ax = [int(a) % r for a in const_value(axes)] if axes is not None else list(range(r))
    if axes is not None and const_value(axes) is None:
        raise ShapeError(f"Pad '{node.name}': the axes must be constant")
    begin, end = [0] * r, [0] * r
    for i, a in enumerate(ax):
        begin[a], end[a] = int(pads[i]), int(pads[len(ax) + i])
    return begin, end


@vjp("Pad")
def pad(b, node, g):
    """The interior of g is dx; the border adds back to the elements it copied.

    * constant: dx = g[pb : pb + d] (negative pads, i.e. crops, pad the cotangent with zeros);
      the pad value receives sum(g) - sum(dx);
    * edge: the border sums add to the first/last element;
    * reflect: y = [x[pb], .., x[1], x, x[d-2], .., x[d-1-pe]]: the flipped borders add to
      dx[1 : pb+1] and dx[d-1-pe : d-1];
    * wrap: y = [x[d-pb:], x, x[:pe]]: g's borders add to dx[d-pb:] and dx[:pe].
    """
    x = node.inputs[0]
    r = known_rank(node, x)
    mode = text(attr(node, "mode", "constant"))
    begin, end = _pad_amounts(node, r)
    gy = g[0]
    if mode == "constant":
        cut = [a for a in range(r) if begin[a] > 0 or end[a] > 0]
        gx = gy
        if cut:
            gx = b.slice(gy, [max(begin[a], 0) for a in cut], [-end[a] if end[a] > 0 else INT_MAX for a in cut], cut)
        if any(p < 0 for p in begin + end):
            gx = b.Pad(gx, b.ints([max(-p, 0) for p in begin + end]))
        grads = [gx, None]
        value = input_or_none(node, 2)
        if value is not None and not isinstance(value, gs.Constant):
            total = b.Sub(*(b.reduce("ReduceSum", t, None, keepdims=False) for t in (gy, gx)))
            grads.append(b.Reshape(total, b.Shape(value)))
        return grads
    if any(p < 0 for p in begin + end):
        raise OnnxplainError(f"Pad '{node.name}': negative pads in mode '{mode}' are not supported")
    for a in range(r):
        pb, pe = begin[a], end[a]
        if not pb and not pe:
            continue
        inner = sl(b, gy, a, pb, -pe if pe else None)
        if mode == "edge":
            if pb:
                first = b.Add(sl(b, inner, a, 0, 1), b.reduce("ReduceSum", sl(b, gy, a, 0, pb), [a]))
                inner = b.Concat(first, sl(b, inner, a, 1), axis=a)
            if pe:
                last = b.Add(sl(b, inner, a, -1), b.reduce("ReduceSum", sl(b, gy, a, -pe), [a]))
                inner = b.Concat(sl(b, inner, a, 0, -1), last, axis=a)
        elif mode == "reflect":
            if pb:  # g[pb-1], .., g[0] went to x[1], .., x[pb]
                left = b.slice(gy, [pb - 1], [INT_MIN], [a], [-1])
                inner = b.Concat(
                    sl(b, inner, a, 0, 1), b.Add(sl(b, inner, a, 1, pb + 1), left), sl(b, inner, a, pb + 1), axis=a
                )
            if pe:  # g[-1], .., g[-pe] went to x[d-1-pe], .., x[d-2]
                right = b.slice(gy, [-1], [-pe - 1], [a], [-1])
                inner = b.Concat(
                    sl(b, inner, a, 0, -pe - 1), b.Add(sl(b, inner, a, -pe - 1, -1), right), sl(b, inner, a, -1), axis=a
                )
        elif mode == "wrap":
            if pb:
                inner = b.Concat(sl(b, inner, a, 0, -pb), b.Add(sl(b, inner, a, -pb), sl(b, gy, a, 0, pb)), axis=a)
            if pe:
                inner = b.Concat(b.Add(sl(b, inner, a, 0, pe), sl(b, gy, a, -pe)), sl(b, inner, a, pe), axis=a)
        else:
            raise OnnxplainError(f"Pad '{node.name}': unknown mode '{mode}'")
        gy = inner
    return [gy, None]


@vjp("Expand", broadcast=True)
def expand(b, node, g):
    """y = broadcast(x): the walker sums g over the broadcast axes."""
    return [g[0], None]


@vjp("Tile")
def tile(b, node, g):
    """y[i*d + j] = x[j] per axis: reshape g to [r0, d0, r1, d1, ...] and sum the repeat axes."""
    x, reps = node.inputs
    r = known_rank(node, x)
    rv, xs = const_value(reps), static_shape(x)
    if rv is not None and xs is not None:
        target = b.ints([v for pair in zip(rv.tolist(), xs) for v in pair])
    else:
        pairs = b.Concat(b.unsqueeze(reps, [1]), b.unsqueeze(b.Shape(x), [1]), axis=1)
        target = b.Reshape(pairs, b.ints([-1]))
    return [b.reduce("ReduceSum", b.Reshape(g[0], target), list(range(0, 2 * r, 2)), keepdims=False), None]
