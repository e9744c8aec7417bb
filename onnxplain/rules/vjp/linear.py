"""VJPs of the linear layers: Conv, ConvTranspose, Gemm, MatMul.

Only input cotangents are built; weight gradients are never needed for an explanation.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import rank, static_shape
from onnxplain.rules.vjp import attr, vjp


def spatial_sizes(x) -> list[int] | None:
    """The spatial sizes of an [N, C, *spatial] tensor when they are known ints (N may be symbolic)."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 3 or not all(isinstance(d, int) and d >= 0 for d in shape[2:]):
        return None
    return list(shape[2:])


def conv_geometry(node, x, w, transpose=False):
    """(kernel, strides, dilations, pads_begin, pads_end) with auto_pad resolved."""
    k = list(attr(node, "kernel_shape") or static_shape(w)[2:])
    n = len(k)
    s = list(attr(node, "strides") or [1] * n)
    d = list(attr(node, "dilations") or [1] * n)
    pads = list(attr(node, "pads") or [0] * (2 * n))
    auto = attr(node, "auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER") and not transpose:
        xs = spatial_sizes(x)
        if xs is None:
            raise OnnxplainError(f"Conv '{node.name}': auto_pad={auto} needs static spatial input sizes")
        pads = [0] * (2 * n)
        for i in range(n):
            out = -(-xs[i] // s[i])
            total = max((out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - xs[i], 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[n + i] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * n)
    return k, s, d, pads[:n], pads[n:]


def flipped_conv_weight(b, w, group: int):
    """W[M, C/g, *k] -> W'[C, M/g, *k] flipped in space: the conv that is the adjoint at stride 1."""
    ws = static_shape(w)
    m, cg, k = ws[0], ws[1], ws[2:]
    n = len(k)
    if group == 1:
        wt = b.transpose(w, [1, 0] + list(range(2, 2 + n)))
    else:
        w5 = b.Reshape(w, b.ints([group, m // group, cg] + k))
        wt = b.Reshape(b.transpose(w5, [0, 2, 1] + list(range(3, 3 + n))), b.ints([group * cg, m // group] + k))
    big = np.iinfo(np.int64).max
    return b.slice(wt, [-1] * n, [-big] * n, list(range(2, 2 + n)), [-1] * n)


@vjp("Conv")
def conv(b, node, g):
    """dx of y = x * W: a conv with the flipped kernel at stride 1, else a ConvTranspose."""
    x, w = node.inputs[0], node.inputs[1]
    if static_shape(w) is None:
        raise ShapeError(f"Conv '{node.name}': the weight shape must be known")
    k, s, d, pb, pe = conv_geometry(node, x, w)
    group = attr(node, "group", 1)
    reach = [(ki - 1) * di for ki, di in zip(k, d)]
    if all(si == 1 for si in s) and all(p <= r for p, r in zip(pb + pe, reach + reach)):
        pads = [r - p for r, p in zip(reach, pb)] + [r - p for r, p in zip(reach, pe)]
        gx = b.Conv(
            g[0], flipped_conv_weight(b, w, group), pads=pads, dilations=d, group=group, kernel_shape=k, strides=s
        )
        return [gx, None, None]
    return [conv_transpose_to(b, g[0], x, w, k, s, d, pb, pe, group), None, None]


def conv_transpose_to(b, gy, x, w, k, s, d, pb, pe, group):
    """ConvTranspose of ``gy`` sized back to ``x``'s spatial shape."""
    n = len(k)
    xs = spatial_sizes(x)
    if xs is not None:
        out_pad = [(xs[i] + pb[i] + pe[i] - ((k[i] - 1) * d[i] + 1)) % s[i] for i in range(n)]
        return b.ConvTranspose(
            gy, w, strides=s, dilations=d, pads=pb + pe, group=group, kernel_shape=k, output_padding=out_pad
        )
    wide = b.ConvTranspose(
        gy, w, strides=s, dilations=d, pads=pb + pe, group=group, kernel_shape=k, output_padding=[si - 1 for si in s]
    )
    ends = b.shape_of(x, 2)
    return b.emit("Slice", wide, b.ints([0] * n), ends, b.ints(list(range(2, 2 + n))))


@vjp("ConvTranspose")
def conv_transpose(b, node, g):
    """dx of y = ConvTranspose(x, W) is Conv(g, W) with the same strides, pads and groups."""
    x, w = node.inputs[0], node.inputs[1]
    k, s, d, pb, pe = conv_geometry(node, x, w, transpose=True)
    n = len(k)
    auto = attr(node, "auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    out_shape = attr(node, "output_shape")
    if out_shape or auto in ("SAME_UPPER", "SAME_LOWER"):
        xs = spatial_sizes(x)
        if xs is None:
            raise OnnxplainError(f"ConvTranspose '{node.name}': output_shape/auto_pad needs static input sizes")
        op = list(attr(node, "output_padding") or [0] * n)
        target = list(out_shape)[-n:] if out_shape else [xs[i] * s[i] for i in range(n)]
        for i in range(n):
            total = s[i] * (xs[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - target[i]
            half = total // 2
            pb[i], pe[i] = (half, total - half) if auto == "SAME_UPPER" else (total - half, half)
    gx = b.Conv(g[0], w, strides=s, dilations=d, pads=pb + pe, group=attr(node, "group", 1), kernel_shape=k)
    return [gx, None, None]


@vjp("Gemm")
def gemm(b, node, g):
    """Y = alpha A' B' + beta C with A' = A or A^T, B' = B or B^T."""
    a, bm = node.inputs[0], node.inputs[1]
    ta, tb = attr(node, "transA", 0), attr(node, "transB", 0)
    alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
    gy = g[0]
    ga = b.Gemm(bm, gy, transA=tb, transB=1, alpha=alpha) if ta else b.Gemm(gy, bm, transB=1 - tb, alpha=alpha)
    gb = b.Gemm(gy, a, transA=1, transB=ta, alpha=alpha) if tb else b.Gemm(a, gy, transA=1 - ta, alpha=alpha)
    grads = [ga, gb]
    if len(node.inputs) > 2 and node.inputs[2].name:
        gc = gy if beta == 1.0 else b.Mul(gy, b.const(beta, like=gy))
        grads.append(b.unbroadcast(gc, node.inputs[2], node.outputs[0].shape))
    return grads


def _swap_last(b, t, r):
    return b.transpose(t, list(range(r - 2)) + [r - 1, r - 2])


@vjp("MatMul")
def matmul(b, node, g):
    """Y = A @ B (numpy semantics): dA = g @ B^T, dB = A^T @ g, summed over broadcast batch axes.

    1-D operands are lifted to matrices (and ``g`` with them), then squeezed back.
    """
    a, bm = node.inputs
    ra, rb = rank(a), rank(bm)
    if ra is None or rb is None:
        raise ShapeError(f"MatMul '{node.name}': operand ranks must be known")
    gy = g[0]
    if rb == 1:
        gy = b.unsqueeze(gy, [-1])
    if ra == 1:
        gy = b.unsqueeze(gy, [-2])
    a2 = b.unsqueeze(a, [0]) if ra == 1 else a
    b2 = b.unsqueeze(bm, [1]) if rb == 1 else bm
    ga = b.MatMul(gy, _swap_last(b, b2, max(rb, 2)))
    gb = b.MatMul(_swap_last(b, a2, max(ra, 2)), gy)
    if ra == 1:
        ga = b.squeeze(ga, [-2])
    if rb == 1:
        gb = b.squeeze(gb, [-1])
    out = node.outputs[0].shape
    batch = None if out is None else list(out)[: len(out) - (2 - (ra == 1) - (rb == 1))]
    return [_sum_batch(b, ga, a, batch), _sum_batch(b, gb, bm, batch)]


def _sum_batch(b, g, x, batch):
    matrix = list(x.shape[-2:]) if rank(x) >= 2 else list(x.shape)
    return b.unbroadcast(g, x, None if batch is None else batch + matrix)
