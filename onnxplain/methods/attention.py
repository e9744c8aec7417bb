"""Attention-aware methods for transformers, as graph heads.

* ``attnlrp`` — LRP with AttnLRP's rules (rules/attnlrp.toml; Achtibat et al. 2024, ICML);
* ``cp_lrp`` — LRP with the attention weights held constant (rules/cp_lrp.toml; Ali et al. 2022, ICML);
* ``attention_rollout`` — Abnar & Zuidema 2020 ("Quantifying Attention Flow in Transformers", ACL, sec. 3):
  per layer the head-averaged attention plus the identity for the residual, A~ = 0.5 mean_h(A) + 0.5 I,
  rows normalised to sum 1, multiplied across layers, later layers on the left: R = A~_L ... A~_1;
* ``chefer`` — Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting Bi-Modal and
  Encoder-Decoder Transformers", ICCV (arXiv:2103.15679), the self-attention rule of sec. 3.1: R = I, then
  for each layer in forward order A_bar = mean_h((dY/dA ⊙ A)^+) and R = R + A_bar R. This is the simpler
  successor of their CVPR 2021 method (which uses LRP relevance of A in place of A itself).

**Attention maps** are found automatically: every Softmax on the path from the explained input to the
explained output whose output is [N, heads, T, T] (or [N, T, T]), taken over its last axis, with the last two
dimensions equal where known. Softmax elsewhere (a classifier's output, a gate) does not have that shape.

**Which row** is read: the head of the model decides. When it reads one token of [N, T, D] (a Gather or
Slice on the token axis: a class token), that token's row R[k, :]; when it pools over the tokens, the mean
of the rows.

**Maps**: for an image input [N, C, H, W] (a ViT) the row is read as the patch grid with the class and
register tokens dropped (:func:`onnxplain.graph.taps.token_layout`, the CAMs' layout, ``prefix_tokens`` to
override), ``attribution_layer`` [N, 1, g_h, g_w] and ``attribution`` that map resized bilinearly to [N, 1, H, W].
For a token input (an embedding [N, T, D], e.g. text explained through its token ids) the attribution is
the row over all T tokens [N, T], with the read token's own entry (the identity's term, as for a ViT's
class token) set to 0.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.methods.lrp import _lrp


def _path(ctx):
    from onnxplain.graph.backward import explained_path

    return explained_path(ctx.forward_nodes, [ctx.x.name], [ctx.logits.name])[1]


def _is_attention(node, opset: int) -> bool:
    s = node.outputs[0].shape
    if node.op != "Softmax" or s is None or len(s) not in (3, 4):
        return False
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1))
    if axis % len(s) != len(s) - 1:
        return False
    a, b = s[-2], s[-1]
    return not (isinstance(a, int) and isinstance(b, int) and a != b) and (
        a == b or not (isinstance(a, str) and isinstance(b, str))
    )


def attention_maps(ctx, path=None) -> list:
    """The attention Softmax nodes on the explained path, in forward order (see the module docstring)."""
    path = _path(ctx) if path is None else path
    nodes = [n for n in path if _is_attention(n, ctx.can.opset)]
    if not nodes:
        raise OnnxplainError(
            f"no attention map between input '{ctx.x.name}' and output '{ctx.logits.name}': "
            "attention methods need Softmax nodes over the last axis of [N, heads, T, T]"
        )
    return nodes


def _readout(path, after: int):
    """('class', index) when the head reads one token after node ``after``, else ('mean', None)."""
    from onnxplain.graph.taps import _token_head

    for node in reversed(path[after:]):
        kind = _token_head(node)
        if kind == "class":
            idx = node.inputs[1].values  # Gather's index or Slice's start (both constant: see _token_head)
            return "class", int(np.asarray(idx).ravel()[0])
        if kind == "mean":
            return "mean", None
    return "mean", None


def _eye(b, m):
    """The identity [T, T] for a batch of maps m [N, T, T]."""
    return b.EyeLike(b.Gather(m, b.const(np.int64(0)), axis=0))


def _head_mean(b, a, r: int):
    """[N, heads, T, T] -> [N, T, T] (the mean over heads); [N, T, T] as it is."""
    return b.reduce("ReduceMean", a, [1], keepdims=False) if r == 4 else a


def _finish(ctx, path, nodes, r):
    """Read the row(s) of R [N, T, T] that the model's head reads and shape it as the attribution."""
    b, x = ctx.b, ctx.x
    last = path.index(nodes[-1])
    kind, k = _readout(path, last)
    row = (
        b.Gather(r, b.const(np.int64(k)), axis=1) if kind == "class" else b.reduce("ReduceMean", r, [1], keepdims=False)
    )
    ctx.meta["onnxplain.attention_maps"] = ",".join(n.name or n.outputs[0].name for n in nodes)
    ctx.meta["onnxplain.attention_row"] = f"token {k}" if kind == "class" else "mean of the rows"
    if x.shape is not None and len(x.shape) == 4:
        return _image_map(ctx, path, nodes, row)
    if x.shape is not None and len(x.shape) == 3:
        if kind == "class":  # drop the read token's own entry: the identity's term
            own = b.Gather(_eye(b, r), b.const(np.int64(k)), axis=0)
            row = b.Mul(row, b.Sub(b.const(1.0, like=row), own))
        return row, [x.shape[0], x.shape[1]]
    raise OnnxplainError(
        f"attention methods need an image [N, C, H, W] or token embeddings [N, T, D] as the "
        f"explained input; '{x.name}' has shape {x.shape}"
    )


def _image_map(ctx, path, nodes, row):
    from onnxplain.graph.taps import _patch_grid, token_layout
    from onnxplain.methods.cam import _upsample

    b, x = ctx.b, ctx.x
    tokens = nodes[0].outputs[0].shape[-1]
    if not isinstance(tokens, int):
        raise OnnxplainError(
            f"attention map '{nodes[0].outputs[0].name}' has an unknown number of tokens; "
            "an image transformer's token count must be known to read the patch grid"
        )
    grid = _patch_grid(path, path.index(nodes[0]))
    k, (gh, gw) = token_layout(tokens, x.shape, grid, ctx.options.prefix_tokens, nodes[0].outputs[0].name)
    ctx.meta["onnxplain.layer_grid"] = f"{k} prefix tokens + {gh}x{gw}"
    if k:
        row = b.slice(row, [k], [2**62], [1])
    m = b.Reshape(row, b.ints([0, 1, gh, gw]))
    ctx.extra_outputs.append(("attribution_layer", m, [x.shape[0], 1, gh, gw]))
    return _upsample(ctx, m), [x.shape[0], 1, x.shape[2], x.shape[3]]


def rollout(ctx):
    """Attention rollout (Abnar & Zuidema 2020): R = prod_l (0.5 mean_h A_l + 0.5 I), rows normalised."""
    b = ctx.b
    path = _path(ctx)
    nodes = attention_maps(ctx, path)
    r = None
    for node in nodes:
        a = _head_mean(b, node.outputs[0], len(node.outputs[0].shape))
        half = b.const(0.5, like=a)
        a = b.Add(b.Mul(half, a), b.Mul(half, _eye(b, a)))
        a = b.Div(a, b.reduce("ReduceSum", a, [-1], keepdims=True))
        r = a if r is None else b.MatMul(a, r)
    return _finish(ctx, path, nodes, r)


def chefer(ctx):
    """Chefer et al. 2021 (ICCV), self-attention rule: R = I; R += mean_h((dY/dA ⊙ A)^+) R, layer by layer."""
    from onnxplain.graph.backward import Backward, GradientRules

    b = ctx.b
    path = _path(ctx)
    nodes = attention_maps(ctx, path)
    maps = [n.outputs[0] for n in nodes]
    grads = Backward(ctx.can.graph, b, GradientRules()).run([(ctx.logits, ctx.seed)], maps)
    r = None
    for a in maps:
        g = grads.get(a.name)
        if g is None:
            raise OnnxplainError(f"attention map '{a.name}' does not reach output '{ctx.logits.name}'")
        bar = _head_mean(b, b.Relu(b.Mul(g, a)), len(a.shape))
        if r is None:
            r = b.Add(_eye(b, bar), bar)  # I + A_bar I
        else:
            r = b.Add(r, b.MatMul(bar, r))
    return _finish(ctx, path, nodes, r)


HEADS = {"attnlrp": _lrp("attnlrp"), "cp_lrp": _lrp("cp_lrp"), "attention_rollout": rollout, "chefer": chefer}
ATTENTION_ONLY = ("attention_rollout", "chefer")  # methods that need attention maps in the model
