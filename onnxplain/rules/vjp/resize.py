"""VJP of Resize (opsets 11, 13, 18, 19).

Resize is linear in x and separable: along each resized axis y = A x with a constant
interpolation matrix A (out x in) that depends only on the sizes and the attributes. The
matrices are built here with numpy from the formulas of the ONNX Resize specification, and the
VJP applies A^T axis by axis:

* nearest with an integer upscale factor s whose A repeats every input s times (the common
  U-Net/FPN case) is a sum-pooling: one Reshape to [.., in, s, ..] and one ReduceSum;
* anything else is a MatMul with the constant A (last axis), with A^T from the left (the
  last-but-one axis, so NCHW needs no Transpose), or a Transpose around the MatMul.

The MatMul is dense (out x in per axis): cheap next to the convolutions around it at U-Net sizes.
Resized axes need static sizes; axes that are not resized (batch, channels) may be dynamic.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import rank
from onnxplain.rules.vjp import attr, vjp
from onnxplain.rules.vjp.shape import (
    apply_matrix,
    const_value,
    dim,
    input_or_none,
    known_rank,
    shape_vector,
    slice_indices,
    text,
)

_COORD_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_half_pixel_for_nearest",
    "tf_crop_and_resize",
)


def source_coordinates(n_in: int, n_out: int, scale: float, mode: str, roi=(0.0, 1.0), dtype=np.float64) -> np.ndarray:
    """x_original for every x_resized in [0, n_out), per coordinate_transformation_mode,
    evaluated in ``dtype`` in the formula's order."""
    f = np.dtype(dtype).type
    x, scale, half, n_in_f = np.arange(n_out, dtype=dtype), f(scale), f(0.5), f(n_in)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = f(n_out) / (scale * n_in_f)
        return n_in_f / f(2) * (f(1) - adjustment) + (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * f(n_in - 1) / f(n_out - 1) if n_out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode in ("tf_half_pixel_for_nn", "tf_half_pixel_for_nearest"):
        return (x + half) / scale
    if mode == "tf_crop_and_resize":
        start, end = f(roi[0]), f(roi[1])
        if n_out > 1:
            return start * f(n_in - 1) + x * (end - start) * f(n_in - 1) / f(n_out - 1)
        return np.full_like(x, half * (start + end) * f(n_in - 1))
    raise ValueError(mode)


def _cubic_kernel(s: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel (IEEE TASSP 1981, eq. 4) with coefficient a."""
    s = np.abs(s)
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return np.where(s <= 1, near, np.where(s < 2, far, 0.0))


def interpolation_matrix(
    n_in: int,
    n_out: int,
    scale: float,
    *,
    mode: str = "nearest",
    coordinate_transformation_mode: str = "half_pixel",
    nearest_mode: str = "round_prefer_floor",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    roi=(0.0, 1.0),
) -> np.ndarray:
    """A (n_out x n_in) with y = A x along one axis, from the ONNX Resize formulas.

    Taps outside [0, n_in) take the edge value (the spec's and onnxruntime's clamping), unless
    ``exclude_outside`` drops them and renormalises. With tf_crop_and_resize, outputs whose
    source lies outside [0, n_in - 1] hold extrapolation_value: their rows are zero.
    """
    xo = source_coordinates(n_in, n_out, scale, coordinate_transformation_mode, roi)
    A = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":  # the pick is discrete: take it from float32 coordinates, as onnxruntime does
        xo = source_coordinates(n_in, n_out, scale, coordinate_transformation_mode, roi, np.float32).astype(np.float64)
        pick = {
            "round_prefer_floor": np.ceil(xo - 0.5),
            "round_prefer_ceil": np.floor(xo + 0.5),
            "floor": np.floor(xo),
            "ceil": np.ceil(xo),
        }[nearest_mode]
        np.add.at(A, (rows, np.clip(pick, 0, n_in - 1).astype(np.int64)), 1.0)
    elif mode == "linear":
        xc = np.clip(xo, 0, n_in - 1)
        i0 = np.floor(xc).astype(np.int64)
        w = xc - i0
        np.add.at(A, (rows, i0), 1 - w)
        np.add.at(A, (rows, np.minimum(i0 + 1, n_in - 1)), w)
    elif mode == "cubic":
        i0 = np.floor(xo).astype(np.int64)
        taps = i0[:, None] + np.arange(-1, 3)[None, :]
        w = _cubic_kernel(xo[:, None] - taps, cubic_coeff_a)
        if exclude_outside:
            w = np.where((taps < 0) | (taps >= n_in), 0.0, w)
            w = w / w.sum(axis=1, keepdims=True)
        np.add.at(A, (np.repeat(rows, 4), np.clip(taps, 0, n_in - 1).ravel()), w.ravel())
    else:
        raise ValueError(mode)
    if coordinate_transformation_mode == "tf_crop_and_resize":
        A[(xo < 0) | (xo > n_in - 1)] = 0.0
    return A


def _ratio(n_out: int, n_in: int) -> float:
    """The scale implied by sizes, divided in float32 like the runtime does."""
    return float(np.float32(n_out) / np.float32(n_in))


def _axis_plan(node, crop: bool):
    """[(axis, n_in, n_out, scale, roi)] for the axes that Resize may change (others are untouched)."""
    x, y = node.inputs[0], node.outputs[0]
    r = known_rank(node, x)
    roi_t, scales_t, sizes_t = (input_or_none(node, i) for i in (1, 2, 3))
    roi, scales, sizes = (const_value(t) for t in (roi_t, scales_t, sizes_t))
    if scales_t is not None and scales is None:
        raise ShapeError(f"Resize '{node.name}': the scales must be constant")
    if crop and roi_t is not None and roi is None:
        raise ShapeError(f"Resize '{node.name}': the roi must be constant")
    scales, sizes, roi = (None if v is None or v.size == 0 else v for v in (scales, sizes, roi))
    axes = [int(a) % r for a in attr(node, "axes", None) or range(r)]
    plan = {a: [None, None, 1.0, (0.0, 1.0)] for a in range(r)}  # n_in, n_out, scale, roi
    for i, a in enumerate(axes):
        plan[a][0] = dim(x, a)
        if crop and roi is not None:
            plan[a][3] = (float(roi[i]), float(roi[len(axes) + i]))
    if scales is not None:
        for i, a in enumerate(axes):
            plan[a][2] = float(scales[i])
            if plan[a][0] is not None:
                plan[a][1] = dim(y, a) if dim(y, a) is not None else int(np.floor(plan[a][0] * plan[a][2]))
    elif sizes is not None:
        ratios = [_ratio(int(sizes[i]), plan[a][0]) if plan[a][0] else None for i, a in enumerate(axes)]
        policy = text(attr(node, "keep_aspect_ratio_policy", "stretch"))
        if policy != "stretch" and None not in ratios:
            s = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [s] * len(axes)
            sizes = [int(s * plan[a][0] + 0.5) for a in axes]
        for i, a in enumerate(axes):
            plan[a][1], plan[a][2] = int(sizes[i]), ratios[i]
    elif sizes_t is not None:  # sizes computed at run time, e.g. concat(shape(x)[:2], [H, W])
        tokens = shape_tokens(sizes_t)
        for i, a in enumerate(axes):
            tok = tokens[i] if tokens is not None and len(tokens) == len(axes) else None
            if tok is None and dim(y, a) is not None:
                tok = dim(y, a)
            if tok is not None and tok == _dim_token(x, a):
                plan[a][2] = "same"
            elif isinstance(tok, int) and plan[a][0] is not None:
                plan[a][1], plan[a][2] = tok, _ratio(tok, plan[a][0])
            else:
                raise ShapeError(
                    f"Resize '{node.name}': sizes are computed at run time and the size of axis {a} "
                    "is not known statically; the gradient needs static sizes on resized axes"
                )
    return [(a, *plan[a]) for a in axes]


def _dim_token(t, k):
    """A dimension as an int, its symbolic name, or (tensor name, axis) when anonymous."""
    d = t.shape[k] if t.shape is not None else None
    known = (isinstance(d, int) and d >= 0) or (isinstance(d, str) and d != "")
    return d if known else (t.name, k)


def shape_tokens(t, depth: int = 12):
    """The value of a small int64 shape tensor as a list of dimension tokens (see :func:`_dim_token`),
    followed through Shape/Slice/Gather/Concat/Unsqueeze/Squeeze/Cast/Identity; None if unknown."""
    v = const_value(t)
    if v is not None:
        return [int(e) for e in np.ravel(v)]
    if depth == 0 or not t.inputs:
        return None
    node = t.inputs[0]
    if node.op == "Shape":
        src, r = node.inputs[0], rank(node.inputs[0])
        if r is None:
            return None
        return [_dim_token(src, k) for k in range(r)][slice(attr(node, "start", 0), attr(node, "end", None))]
    if node.op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return shape_tokens(node.inputs[0], depth - 1)
    if node.op == "Concat":
        parts = [shape_tokens(i, depth - 1) for i in node.inputs]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    src = shape_tokens(node.inputs[0], depth - 1)
    if src is None:
        return None
    if node.op == "Gather" and const_value(node.inputs[1]) is not None:
        return [src[int(i)] for i in np.ravel(const_value(node.inputs[1]))]
    if node.op == "Slice" and len(node.inputs) >= 3:
        bounds = [
            const_value(node.inputs[i]) if i < len(node.inputs) and node.inputs[i].name else None for i in (1, 2, 3, 4)
        ]
        if any(bd is None for bd in bounds[:2]):
            return None
        step = int(bounds[3][0]) if bounds[3] is not None else 1
        return [src[int(i)] for i in slice_indices(len(src), int(bounds[0][0]), int(bounds[1][0]), step)]
    return None


_IDENTITY_PROBES = (1, 2, 3, 5, 8)


@vjp("Resize")
def resize(b, node, g):
    """dx = A_1^T ... A_k^T g over the resized axes (see the module docstring for the construction)."""
    x = node.inputs[0]
    r = known_rank(node, x)
    mode = text(attr(node, "mode", "nearest"))
    coord = text(attr(node, "coordinate_transformation_mode", "half_pixel"))
    if coord not in _COORD_MODES or mode not in ("nearest", "linear", "cubic"):
        raise OnnxplainError(f"Resize '{node.name}': unsupported mode {mode}/{coord}")
    kw = dict(
        mode=mode,
        coordinate_transformation_mode=coord,
        nearest_mode=text(attr(node, "nearest_mode", "round_prefer_floor")),
        cubic_coeff_a=float(attr(node, "cubic_coeff_a", -0.75)),
        exclude_outside=int(attr(node, "exclude_outside", 0)),
    )
    y = node.outputs[0]
    pool, dense = {}, []
    for a, n_in, n_out, scale, roi in _axis_plan(node, coord == "tf_crop_and_resize"):
        if scale == "same" or (
            n_in is None
            and scale == 1.0
            and roi == (0.0, 1.0)
            and all(np.array_equal(interpolation_matrix(k, k, 1.0, **kw), np.eye(k)) for k in _IDENTITY_PROBES)
        ):
            continue
        if n_in is None or n_out is None:
            raise ShapeError(
                f"Resize '{node.name}': axis {a} is resized but its size is not known statically; "
                "the gradient needs static sizes on resized axes"
            )
        if attr(node, "antialias", 0) and mode != "nearest" and scale < 1:
            raise OnnxplainError(f"Resize '{node.name}': antialiased downscaling is not supported")
        A = interpolation_matrix(n_in, n_out, scale, roi=roi, **kw)
        if n_in == n_out and np.array_equal(A, np.eye(n_in)):
            continue
        s = n_out // n_in
        if n_out == s * n_in and np.array_equal(A, np.repeat(np.eye(n_in), s, axis=0)):
            pool[a] = (n_in, s)
        else:
            dense.append((a, A))
    gx = g[0]
    if pool:  # [.., in*s, ..] -> [.., in, s, ..], summed over the s axes
        pieces, sum_axes = [], []
        for a in range(r):
            if a in pool:
                pieces += list(pool[a])
                sum_axes.append(len(pieces) - 1)
            else:  # dense axes are still at their output size here
                pieces.append(dim(y, a) if dim(y, a) is not None else b.shape_of(gx, a, a + 1))
        gx = b.reduce("ReduceSum", b.Reshape(gx, shape_vector(b, pieces)), sum_axes, keepdims=False)
    for a, A in dense:
        gx = apply_matrix(b, gx, A, a, r, like=x)
    return [gx] + [None] * (len(node.inputs) - 1)
