"""The Grad-CAM family as graph taps: maps built from a layer's activation A and its gradient.

The layer is :func:`onnxplain.graph.taps.find_tap`'s (``Options.layer``, default the automatic choice);
a token map [N, T, D] is first read as a grid [N, D, h, w]. With G = dY/dA (Y = sum(seed * logits)),
channels k and positions ij:

* ``gradcam`` — ReLU(sum_k w_k A_k), w_k = mean_ij G_kij (Selvaraju et al. 2017, arXiv:1610.02391);
* ``gradcam_pp`` — w_k = sum_ij alpha_kij ReLU(G_kij), alpha = G^2 / (2 G^2 + sum_ij(A_k) G^3 + 1e-6),
  the closed form for an exponential output as usually implemented (Chattopadhay et al. 2018,
  arXiv:1710.11063);
* ``hirescam`` — ReLU(sum_k G_k * A_k), position by position (Draelos & Carin 2020, arXiv:2011.08891);
* ``layercam`` — ReLU(sum_k ReLU(G_k) * A_k) (Jiang et al. 2021, IEEE TIP 30);
* ``xgradcam`` — w_k = sum_ij(A_k G_k) / (sum_ij(A_k) + 1e-7) (Fu et al. 2020, arXiv:2008.02312);
* ``guided_gradcam`` — the upsampled Grad-CAM times guided backprop's input attribution
  (Selvaraju et al. 2017), the guided part with the rules of rules/guided_backprop.toml.

Everything happens inside the graph: ``attribution_layer`` is the map at the layer's resolution
[N, 1, h, w]; ``attribution`` is that map resized to the input's spatial size by bilinear
interpolation (Resize, linear, half_pixel) [N, 1, H, W] — for ``guided_gradcam`` the input's shape.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError

EPS_PP = 1e-6  # Grad-CAM++'s denominator guard
EPS_X = 1e-7  # XGrad-CAM's


def _tap(ctx):
    from onnxplain.graph.taps import find_tap

    o = ctx.options
    return find_tap(ctx.can, o.layer, o.prefix_tokens, x=ctx.x, logits=ctx.logits, nodes=ctx.forward_nodes)


def _maps(ctx):
    """(tap, A, G) with A and G as [N, C, h, w]."""
    if ctx.x.shape is None or len(ctx.x.shape) != 4:
        raise OnnxplainError(
            f"CAM methods need an image input [N, C, H, W]; input '{ctx.x.name}' has shape {ctx.x.shape}"
        )
    if ctx.can.opset < 11:
        raise OnnxplainError(
            f"CAM methods resize maps with Resize(sizes=...), which needs opset >= 11, not {ctx.can.opset}"
        )
    tap = _tap(ctx)
    ctx.meta["onnxplain.layer"] = tap.name
    if tap.kind == "tokens":
        ctx.meta["onnxplain.layer_grid"] = f"{tap.prefix} prefix tokens + {tap.grid[0]}x{tap.grid[1]}"
    g = ctx.backward(x=tap.tensor)
    b = ctx.b
    return tap, tap.to_grid(b, tap.tensor), tap.to_grid(b, g)


def _layer_shape(ctx, tap):
    n = ctx.x.shape[0]
    if tap.kind == "tokens":
        return [n, 1, *tap.grid]
    s = tap.tensor.shape
    return [n, 1, s[2], s[3]]


def _upsample(ctx, m):
    """[N, 1, h, w] -> [N, 1, H, W] (H, W the input's), bilinear with half-pixel centres."""
    b, x = ctx.b, ctx.x
    sizes = b.Concat(b.shape_of(m, 0, 2), b.shape_of(x, 2, 4), axis=0)
    roi = b.const(np.zeros(0), like=m)
    scales = b.const(np.zeros(0, dtype=np.float32))
    return b.Resize(m, roi, scales, sizes, mode="linear", coordinate_transformation_mode="half_pixel")


def _finish(ctx, tap, layer_map):
    """Register ``attribution_layer`` and return (upsampled map, its shape)."""
    shape = _layer_shape(ctx, tap)
    ctx.extra_outputs.append(("attribution_layer", layer_map, shape))
    x = ctx.x
    return _upsample(ctx, layer_map), [x.shape[0], 1, x.shape[2], x.shape[3]]


def _weighted(ctx, a, w):
    """ReLU(sum_k w_k A_k) as [N, 1, h, w]."""
    b = ctx.b
    return b.Relu(b.reduce("ReduceSum", b.Mul(w, a), [1], keepdims=True))


def _gradcam_layer(ctx):
    tap, a, g = _maps(ctx)
    w = ctx.b.reduce("ReduceMean", g, [2, 3], keepdims=True)
    return tap, _weighted(ctx, a, w)


def gradcam(ctx):
    tap, m = _gradcam_layer(ctx)
    return _finish(ctx, tap, m)


def gradcam_pp(ctx):
    b = ctx.b
    tap, a, g = _maps(ctx)
    g2 = b.Mul(g, g)
    g3 = b.Mul(g2, g)
    total = b.reduce("ReduceSum", a, [2, 3], keepdims=True)
    denom = b.Add(b.Add(b.Mul(b.const(2.0, like=g), g2), b.Mul(total, g3)), b.const(EPS_PP, like=g))
    alpha = b.Div(g2, denom)
    w = b.reduce("ReduceSum", b.Mul(alpha, b.Relu(g)), [2, 3], keepdims=True)
    return _finish(ctx, tap, _weighted(ctx, a, w))


def hirescam(ctx):
    b = ctx.b
    tap, a, g = _maps(ctx)
    return _finish(ctx, tap, b.Relu(b.reduce("ReduceSum", b.Mul(g, a), [1], keepdims=True)))


def layercam(ctx):
    b = ctx.b
    tap, a, g = _maps(ctx)
    return _finish(ctx, tap, b.Relu(b.reduce("ReduceSum", b.Mul(b.Relu(g), a), [1], keepdims=True)))


def xgradcam(ctx):
    b = ctx.b
    tap, a, g = _maps(ctx)
    total = b.reduce("ReduceSum", a, [2, 3], keepdims=True)
    w = b.Div(b.reduce("ReduceSum", b.Mul(a, g), [2, 3], keepdims=True), b.Add(total, b.const(EPS_X, like=a)))
    return _finish(ctx, tap, _weighted(ctx, a, w))


def guided_gradcam(ctx):
    tap, m = _gradcam_layer(ctx)
    up, _ = _finish(ctx, tap, m)
    guided = ctx.backward(rules=ctx.rules("guided_backprop"))
    return ctx.b.Mul(up, guided), ctx.x.shape


HEADS = {
    "gradcam": gradcam,
    "gradcam_pp": gradcam_pp,
    "hirescam": hirescam,
    "layercam": layercam,
    "xgradcam": xgradcam,
    "guided_gradcam": guided_gradcam,
}
