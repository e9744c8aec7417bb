"""Fuse exporters' decompositions of activations and of LayerNorm back into single ONNX ops.

Modified rules are chosen by op type (``rules/*.toml``), so an activation that an exporter spells
out in primitives gets the rules of its pieces, not its own: Paddle writes HardSwish as
``x * Clip(x + 3, 0, 6) / 6``, and LRP then splits the relevance between the two factors and the
``+ 3`` takes most of it; PyTorch writes SiLU as ``x * Sigmoid(x)``, and guided backpropagation
and the deconvnet, which act on ReLU-like ops only, become the plain gradient. :func:`fuse` runs
during canonicalisation, before any rule is chosen, and rewrites these patterns (ONNX operator
spec, https://onnx.ai/onnx/operators/):

* ``x * Clip(x + 3, 0, 6) / 6`` (also ``* 1/6``; Clip bounds as inputs or as attributes; ReLU6 as
  ``Min(Max(., 0), 6)`` or ``Min(Relu(.), 6)``) and ``x * HardSigmoid(x; 1/6, 1/2)``
  -> ``HardSwish`` (spec: y = x max(0, min(1, x/6 + 1/2)));
* ``Clip(x + 3, 0, 6) / 6`` alone -> ``HardSigmoid(alpha=1/6, beta=1/2)``;
* ``x * Sigmoid(alpha x)``, alpha > 0 -> ``Swish(alpha)`` (spec, opset 24: y = x sigmoid(alpha x)):
  SiLU (alpha = 1) and QuickGELU (alpha = 1.702);
* ``0.5 x (1 + erf(x / sqrt 2))`` and ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, in any
  order of the factors and sums -> ``Gelu`` with approximate = "none" / "tanh" (opset 20);
* ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta`` (square as Pow or Mul,
  division as Div or Mul by Reciprocal) over trailing axes -> ``LayerNormalization`` (opset 17).

Fusion is exact: every constant of a pattern must equal its value to float32 rounding (relative
:data:`RTOL`), and the result is the same function to float32 rounding. A pattern fuses only when
its intermediate tensors feed nothing outside it and are not graph outputs.

Exports: the fused ops live in the canonical graph only, where the rules are chosen. When a graph
is exported, :func:`lower` puts each fused node's own decomposition back (the model's nodes,
constants and tensor names), so the explained graph computes the model's forward bit for bit and
stays valid at the model's opset. The rules still come from the fused op: its backward nodes read
only the pattern's input and output, which the decomposition writes. Fused ops that have no
decomposition to restore (DeepLIFT's copies of the forward for the baseline, or an op in the model
itself) are written in primitives (the op's ONNX function body) where the model's opset lacks the
op (:data:`NEWER`). Raising the model's opset instead would change the meaning of other ops
(Reduce* axes, Split, Squeeze, Resize, ...). Swish is always written out: onnxruntime 1.31 has no
Swish kernel (it inlines the function only at opset 24).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from onnxplain.graph.builder import is_float, np_dtype, rank

RTOL = 1e-6  # constants must match to this relative tolerance (a few float32 rounding steps)
SQRT_HALF = 1 / math.sqrt(2)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
GELU_CUBIC = 0.044715
QUICK_GELU = 1.702

# fused op -> the first opset that has it (None: always lowered, see the module docstring)
NEWER = {"HardSwish": 14, "LayerNormalization": 17, "Gelu": 20, "Swish": None}


@dataclass(frozen=True)
class Fusion:
    """One fused decomposition: what it was, the op it became, that node's name and the nodes it replaced."""

    pattern: str
    op: str
    node: str
    replaced: tuple


def summary(fusions) -> dict:
    """{pattern: count}, in order of first appearance."""
    return dict(Counter(f.pattern for f in fusions))


def describe_fusions(fusions) -> str:
    """'12 decomposed HardSwish, 3 GELU (erf)'."""
    return ", ".join(f"{n} {p}" for p, n in summary(fusions).items())


def fuse(graph: gs.Graph) -> list[Fusion]:
    """Fuse every known decomposition in ``graph`` (topologically sorted, nodes named); returns the fusions."""
    ctx = _Ctx(graph)
    ctx.order = {id(n): i for i, n in enumerate(graph.nodes)}
    fusions = []
    for root in reversed(list(graph.nodes)):  # a pattern's root comes after its inner nodes
        if id(root) in ctx.done or len(root.outputs) != 1:
            continue
        found = _layernorm(ctx, root) or _product(ctx, root) or _hard_sigmoid(ctx, root)
        if found is not None:
            fusions.append(_apply(graph, ctx, root, *found))
    if fusions:
        dead = ctx.done
        graph.nodes = [n for n in graph.nodes if id(n) not in dead]
    return fusions


# ---- matching --------------------------------------------------------------------------------------
def _near(value: float, target: float) -> bool:
    return abs(value - target) <= RTOL * abs(target) if target else value == 0


def _const(t):
    """The value of a constant tensor (an initializer or a Constant node's output), else None."""
    if isinstance(t, gs.Constant):
        return t.values
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant" and isinstance(t.inputs[0].attrs.get("value"), gs.Constant):
        return t.inputs[0].attrs["value"].values
    return None


class _Ctx:
    def __init__(self, graph):
        self.outputs = {t.name for t in graph.outputs}
        self.names = {n.name for n in graph.nodes}
        self.done: set = set()  # ids of nodes fused away
        self.order: dict = {}  # id(node) -> its index in graph.nodes

    def inner(self, t):
        """The producer of ``t`` when ``t`` feeds exactly one node and is not a graph output."""
        if t.name in self.outputs or len(t.outputs) != 1 or len(t.inputs) != 1:
            return None
        p = t.inputs[0]
        return None if id(p) in self.done or len(p.outputs) != 1 else p


class _Match:
    """The nodes of one candidate pattern and the ranks of the scalar constants it read."""

    def __init__(self, ctx, nodes=(), ndims=()):
        self.ctx, self.nodes, self.ndims = ctx, list(nodes), list(ndims)

    def copy(self):
        return _Match(self.ctx, self.nodes, self.ndims)

    def inner(self, t, *ops):
        p = self.ctx.inner(t)
        if p is None or (ops and p.op not in ops):
            return None
        self.nodes.append(p)
        return p

    def scalar(self, t):
        v = _const(t)
        if v is None or v.size != 1 or v.dtype.kind not in "fiu":
            return None
        self.ndims.append(v.ndim)
        return float(v.reshape(-1)[0])

    def split(self, node):
        """(scalar, other input) of a binary node with exactly one scalar-constant input, else (None, None)."""
        if len(node.inputs) != 2:
            return None, None, None
        c0, c1 = self.scalar(node.inputs[0]), self.scalar(node.inputs[1])
        if (c0 is None) == (c1 is None):
            return None, None, None
        return (c0, node.inputs[1], 0) if c0 is not None else (c1, node.inputs[0], 1)

    def poly(self, t, x, depth: int = 0):
        """{power: coefficient} when ``t`` is a polynomial of degree <= 3 in ``x`` (Add, Sub, Mul, Neg,
        Div by a constant, Pow by 2 or 3), else None."""
        if t is x:
            return {1: 1.0}
        c = self.scalar(t)
        if c is not None:
            return {0: c}
        p = self.inner(t, "Add", "Sub", "Mul", "Div", "Neg", "Pow") if depth < 12 else None
        if p is None:
            return None
        if p.op == "Neg":
            a = self.poly(p.inputs[0], x, depth + 1)
            return None if a is None else {k: -v for k, v in a.items()}
        if p.op in ("Div", "Pow"):
            c = self.scalar(p.inputs[1])
            a = self.poly(p.inputs[0], x, depth + 1)
            if a is None or c is None:
                return None
            if p.op == "Div":
                return {k: v / c for k, v in a.items()} if c else None
            return _power(a, int(c)) if c in (2.0, 3.0) else None
        if len(p.inputs) != 2:
            return None
        a, b = self.poly(p.inputs[0], x, depth + 1), self.poly(p.inputs[1], x, depth + 1)
        if a is None or b is None:
            return None
        if p.op == "Mul":
            return _times(a, b)
        sign = -1.0 if p.op == "Sub" else 1.0
        return {k: a.get(k, 0.0) + sign * b.get(k, 0.0) for k in set(a) | set(b)}

    def clip(self, node):
        """(u, lo, hi) when ``node`` clips u to [lo, hi]: Clip (bounds as inputs or attributes),
        Min(Max(u, lo), hi), Max(Min(u, hi), lo) or Min(Relu(u), hi)."""
        if node.op == "Clip":
            if len(node.inputs) > 1:
                bounds = [self.scalar(t) if t.name else None for t in node.inputs[1:3]]
                lo, hi = (bounds + [None])[:2]
            else:
                lo, hi = node.attrs.get("min"), node.attrs.get("max")
            return (node.inputs[0], float(lo), float(hi)) if lo is not None and hi is not None else None
        if node.op not in ("Min", "Max"):
            return None
        outer, inner_t, _ = self.split(node)
        if outer is None:
            return None
        p = self.inner(inner_t, "Relu", "Max" if node.op == "Min" else "Min")
        if p is None:
            return None
        if p.op == "Relu":
            return (p.inputs[0], 0.0, outer) if node.op == "Min" else None
        bound, u, _ = self.split(p)
        if bound is None:
            return None
        return (u, bound, outer) if node.op == "Min" else (u, outer, bound)

    def gate(self, t, x):
        """``t = a + b g`` with g a gate of x. Returns (a, b, kind, params): kind "Sigmoid", "Erf" or
        "Tanh" with params the polynomial of x inside; kind "hard" with params (alpha, beta) of
        g = max(0, min(1, alpha x + beta)) (a HardSigmoid, or a Clip to [0, hi] divided by hi)."""
        a, b = 0.0, 1.0
        for _ in range(8):
            p = self.inner(t)
            if p is None:
                return None
            if p.op in ("Add", "Sub", "Mul", "Div"):
                c, t, at = self.split(p)
                if c is None or (p.op == "Div" and (at == 0 or c == 0)):
                    return None
                if p.op == "Add":
                    a += b * c
                elif p.op == "Sub":
                    a, b = (a + b * c, -b) if at == 0 else (a - b * c, b)
                else:
                    b = b * c if p.op == "Mul" else b / c
                continue
            if p.op in ("Sigmoid", "Erf", "Tanh"):
                poly = self.poly(p.inputs[0], x)
                return None if poly is None else (a, b, p.op, {k: v for k, v in poly.items() if v})
            if p.op == "HardSigmoid":
                line = _line(self.poly(p.inputs[0], x))
                if line is None:
                    return None
                alpha, beta = float(p.attrs.get("alpha", 0.2)), float(p.attrs.get("beta", 0.5))
                return a, b, "hard", (alpha * line[1], alpha * line[0] + beta)
            clipped = self.clip(p)
            if clipped is None or clipped[1] != 0.0 or not clipped[2] > 0:
                return None
            u, _, hi = clipped
            line = _line(self.poly(u, x))
            return None if line is None else (a, b * hi, "hard", (line[1] / hi, line[0] / hi))
        return None


def _times(a: dict, b: dict):
    out: dict = {}
    for i, u in a.items():
        for j, v in b.items():
            if i + j > 3:
                return None
            out[i + j] = out.get(i + j, 0.0) + u * v
    return out


def _power(a: dict, n: int):
    out = a
    for _ in range(n - 1):
        out = _times(out, a) if out is not None else None
    return out


def _line(poly):
    """(p0, p1) of a polynomial of degree <= 1, else None."""
    if poly is None or any(k > 1 and v for k, v in poly.items()):
        return None
    return poly.get(0, 0.0), poly.get(1, 0.0)


def _fits(m: _Match, x) -> bool:
    """x is a float tensor of known rank, and no scalar constant of the pattern broadcasts it to a higher rank."""
    r = rank(x)
    return not isinstance(x, gs.Constant) and is_float(x) and r is not None and all(d <= r for d in m.ndims)


def _flatten(m: _Match, root):
    """A Mul/Div-by-constant tree as (constant factor, [other factors]), descending into inner Muls and
    Divs by a constant."""
    scale, leaves = 1.0, []

    def visit(node):
        nonlocal scale
        if node.op == "Div":
            c = m.scalar(node.inputs[1])
            if c is None or c == 0:
                return False
            scale /= c
            return walk(node.inputs[0])
        return len(node.inputs) == 2 and all(walk(t) for t in node.inputs)

    def walk(t):
        nonlocal scale
        c = m.scalar(t)
        if c is not None:
            scale *= c
            return True
        p = m.ctx.inner(t)
        if p is not None and (p.op == "Mul" or (p.op == "Div" and _const(p.inputs[1]) is not None)):
            m.nodes.append(p)
            return visit(p)
        leaves.append(t)
        return True

    return (scale, leaves) if visit(root) else (None, None)


def _product(ctx, root):
    """x * gate(x) times constants: HardSwish, Swish (SiLU, QuickGELU) or Gelu."""
    if root.op not in ("Mul", "Div"):
        return None
    base = _Match(ctx, [root])
    scale, leaves = _flatten(base, root)
    if scale is None or len(leaves) != 2 or leaves[0] is leaves[1]:
        return None
    for x, g in (leaves, leaves[::-1]):
        m = base.copy()
        found = m.gate(g, x)
        if found is None or not _fits(m, x):
            continue
        a, b, kind, params = found
        a, k = scale * a, scale * b
        op = _gated(kind, params, a, k)
        if op is not None:
            pattern, op_type, attrs = op
            return m.nodes, pattern, op_type, [x], attrs
    return None


def _gated(kind, params, a, k):
    """(pattern, op, attrs) for y = x (a + k gate(x)), or None."""
    if kind == "Sigmoid" and a == 0 and _near(k, 1) and set(params) == {1} and params[1] > 0:
        alpha = params[1]
        name = "SiLU" if _near(alpha, 1) else "QuickGELU" if _near(alpha, QUICK_GELU) else "Swish"
        return f"decomposed {name}", "Swish", {"alpha": float(alpha)}
    if kind == "hard" and a == 0 and _near(k, 1) and _near(params[0], 1 / 6) and _near(params[1], 0.5):
        return "decomposed HardSwish", "HardSwish", {}
    if not (_near(a, 0.5) and _near(k, 0.5)):
        return None
    if kind == "Erf" and set(params) == {1} and _near(params[1], SQRT_HALF):
        return "GELU (erf)", "Gelu", {}
    if (
        kind == "Tanh"
        and set(params) == {1, 3}
        and _near(params[1], SQRT_2_OVER_PI)
        and _near(params[3] / params[1], GELU_CUBIC)
    ):
        return "GELU (tanh)", "Gelu", {"approximate": "tanh"}
    return None


def _hard_sigmoid(ctx, root):
    """Clip(x + 3, 0, 6) / 6 (or * 1/6) alone -> HardSigmoid(1/6, 1/2)."""
    if root.op not in ("Mul", "Div"):
        return None
    base = _Match(ctx, [root])
    scale, leaves = _flatten(base, root)
    if scale is None or len(leaves) != 1:
        return None
    m = base.copy()
    p = m.inner(leaves[0])
    clipped = m.clip(p) if p is not None else None
    add = m.inner(clipped[0], "Add") if clipped is not None else None
    x = m.split(add)[1] if add is not None else None
    if x is None:
        return None
    m = base.copy()
    found = m.gate(leaves[0], x)
    if found is None or not _fits(m, x):
        return None
    a, b, kind, (alpha, beta) = found
    if kind == "hard" and scale * a == 0 and _near(scale * b, 1) and _near(alpha, 1 / 6) and _near(beta, 0.5):
        return m.nodes, "decomposed HardSigmoid", "HardSigmoid", [x], {"alpha": 1 / 6, "beta": 0.5}
    return None


def _mean_axes(node, r):
    """The sorted axes of a keepdims ReduceMean (attribute or constant input), else None."""
    if node.op != "ReduceMean" or not node.attrs.get("keepdims", 1):
        return None
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = _const(node.inputs[1])
        axes = None if v is None else v.reshape(-1).tolist()
    else:
        axes = node.attrs.get("axes")
    if axes is None or len(axes) == 0:
        return list(range(r))
    return sorted(int(a) % r for a in axes)


def _affine_param(v, x, axis):
    """gamma/beta broadcast to the normalised shape x.shape[axis:], or None if it varies along other axes."""
    r, shape = rank(x), x.shape[axis:]
    if v.ndim > r or not all(isinstance(d, int) for d in shape):
        return None
    full = (1,) * (r - v.ndim) + v.shape
    if any(d != 1 for d in full[:axis]):
        return None
    try:
        return np.ascontiguousarray(np.broadcast_to(v.reshape(full[axis:]), shape))
    except ValueError:
        return None


def _layernorm(ctx, root):
    """(x - mean x) / sqrt(mean (x - mean x)^2 + eps) [* gamma] [+ beta] -> LayerNormalization."""
    if root.op not in ("Add", "Mul", "Div"):
        return None
    m = _Match(ctx, [root])
    node, gamma, beta = root, None, None
    if node.op == "Add":
        consts = [_const(t) for t in node.inputs]
        if len(node.inputs) != 2 or (consts[0] is None) == (consts[1] is None):
            return None
        beta = consts[0] if consts[0] is not None else consts[1]
        node = m.inner(node.inputs[1] if consts[0] is not None else node.inputs[0], "Mul", "Div")
    if node is not None and node.op == "Mul":
        consts = [_const(t) for t in node.inputs]
        if len(node.inputs) == 2 and (consts[0] is None) != (consts[1] is None):
            gamma = consts[0] if consts[0] is not None else consts[1]
            node = m.inner(node.inputs[1] if consts[0] is not None else node.inputs[0], "Mul", "Div")
    if node is None or len(node.inputs) != 2:
        return None
    norm = node
    if norm.op == "Div":
        d, sqrt = norm.inputs[0], m.inner(norm.inputs[1], "Sqrt")
    else:
        d, sqrt = None, None
        for i in (0, 1):
            rec = m.copy().inner(norm.inputs[1 - i], "Reciprocal")
            if rec is not None:
                m.inner(norm.inputs[1 - i])
                d, sqrt = norm.inputs[i], m.inner(rec.inputs[0], "Sqrt")
                break
    add = m.inner(sqrt.inputs[0], "Add") if sqrt is not None else None
    eps, v, _ = m.split(add) if add is not None else (None, None, None)
    var = m.inner(v, "ReduceMean") if v is not None else None
    sq = m.inner(var.inputs[0], "Pow", "Mul") if var is not None else None
    if sq is None or eps is None or eps < 0:
        return None
    if sq.op == "Pow" and not (sq.inputs[0] is d and m.scalar(sq.inputs[1]) == 2.0):
        return None
    if sq.op == "Mul" and not (sq.inputs[0] is d and sq.inputs[1] is d):
        return None
    sub = d.inputs[0] if len(d.inputs) == 1 else None
    if sub is None or sub.op != "Sub" or d.name in ctx.outputs or id(sub) in ctx.done or len(sub.outputs) != 1:
        return None
    if {id(n) for n in d.outputs} != {id(sq), id(norm)}:
        return None
    m.nodes.append(sub)
    x = sub.inputs[0]
    mean = m.inner(sub.inputs[1], "ReduceMean")
    r = rank(x)
    if mean is None or mean.inputs[0] is not x or not _fits(m, x) or rank(root.outputs[0]) != r:
        return None
    axes = _mean_axes(mean, r)
    if axes is None or axes != _mean_axes(var, r) or axes != list(range(axes[0], r)):
        return None
    axis = axes[0]
    dtype = np_dtype(x)
    gamma = np.ones([1], dtype) if gamma is None else gamma
    scale = _affine_param(gamma, x, axis)
    bias = None if beta is None else _affine_param(beta, x, axis)
    if scale is None or scale.dtype != dtype or (beta is not None and (bias is None or bias.dtype != dtype)):
        return None
    inputs = [x, gs.Constant(f"{root.name}:ln_scale", scale)]
    if bias is not None:
        inputs.append(gs.Constant(f"{root.name}:ln_bias", bias))
    return m.nodes, "decomposed LayerNorm", "LayerNormalization", inputs, {"axis": axis, "epsilon": float(eps)}


def _apply(graph, ctx, root, nodes, pattern, op, inputs, attrs) -> Fusion:
    y = root.outputs[0]
    unique = sorted({id(n): n for n in nodes}.values(), key=lambda n: ctx.order[id(n)])
    name = _name(ctx, [root] + [n for n in unique if n is not root], op)
    decomposition = (op, _snapshot(unique))
    for n in unique:
        n.inputs.clear()
        n.outputs.clear()
        ctx.done.add(id(n))
    node = gs.Node(op, name=name, attrs=attrs, inputs=inputs, outputs=[y])
    node.decomposition = decomposition  # put back by lower() when the graph is exported
    graph.nodes[ctx.order[id(root)]] = node
    return Fusion(pattern, op, name, tuple(n.name for n in unique))


def _snapshot(nodes):
    """The pattern's nodes as NodeProtos (in order) and the values of the constants they read."""
    protos, consts = [], {}
    for n in nodes:
        protos.append(
            helper.make_node(
                n.op,
                [t.name for t in n.inputs],
                [t.name for t in n.outputs],
                name=n.name,
                domain=n.domain or None,
                **n.attrs,
            )
        )
        for t in n.inputs:
            v = _const(t)
            if v is not None and t.name:
                consts[t.name] = np.array(v)
    return protos, consts


def _name(ctx, nodes, op) -> str:
    """The nodes' common scope (torch's '/stage1/act/') plus the op, made unique."""
    names = [n.name or "" for n in nodes]
    prefix = names[0][: len(names[0]) - len(names[0].split("/")[-1])]
    while prefix and not all(n.startswith(prefix) for n in names):
        prefix = prefix[: prefix[:-1].rfind("/") + 1]
    base = f"{prefix}{op}" if prefix.strip("/") else f"{names[0]}:{op}"
    name, i = base, 1
    while name in ctx.names:
        name, i = f"{base}_{i}", i + 1
    ctx.names.add(name)
    return name


# ---- lowering -----------------------------------------------------------------------------------
def lower(model: onnx.ModelProto, graph: gs.Graph) -> int:
    """In ``model``, exported from ``graph``: put back each fused node's decomposition, and write each
    other op that the model's opset lacks (see :data:`NEWER`) as its ONNX function body in
    primitives. Returns the number of nodes rewritten."""
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    originals = {n.name: n.decomposition for n in graph.nodes if getattr(n, "decomposition", None)}
    if opset is None or not (originals or any(n.op_type in NEWER for n in model.graph.node)):
        return 0
    tensors = graph.tensors()
    taken = (
        {o for n in model.graph.node for o in n.output}
        | {t.name for t in model.graph.initializer}
        | {t.name for t in model.graph.input}
    )
    out, count = [], 0
    for node in model.graph.node:
        op, (protos, consts) = originals.get(node.name, (None, ([], {})))
        inner = {o for p in protos for o in p.output} - set(node.output)
        if op == node.op_type and not inner & taken:
            out.extend(protos)
            for name, value in consts.items():
                if name not in taken:
                    model.graph.initializer.append(numpy_helper.from_array(value, name))
                    taken.add(name)
            count += 1
            continue
        since = NEWER.get(node.op_type, 0)
        x = tensors.get(node.input[0]) if node.input else None
        if (
            node.domain not in ("", "ai.onnx")
            or (since is not None and opset >= since)
            or x is None
            or np_dtype(x) is None
            or any(o for o in node.output[1:])
        ):
            out.append(node)
            continue
        nodes = _Body(node, np_dtype(x), opset).lower(rank(x))
        out.extend(nodes or [node])
        count += nodes is not None
    if count:
        del model.graph.node[:]
        model.graph.node.extend(out)
    return count


class _Body:
    """Emits a lowered node's body as NodeProtos; the last one writes the node's output."""

    def __init__(self, node, dtype, opset):
        self.node, self.dtype, self.opset, self.nodes, self.k = node, dtype, opset, [], 0
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def emit(self, op, *inputs, **attrs):
        self.k += 1
        out = f"{self.node.output[0]}/lowered_{self.k}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"{self.node.name}/lowered_{self.k}", **attrs))
        return out

    def const(self, value):
        return self.emit("Constant", value=numpy_helper.from_array(np.array(value, dtype=self.dtype)))

    def lower(self, r):
        n, x = self.node, self.node.input[0]
        if n.op_type == "HardSwish":
            y = self.emit("Mul", x, self.emit("HardSigmoid", x, alpha=1 / 6, beta=0.5))
        elif n.op_type == "Swish":
            alpha = float(self.attrs.get("alpha", 1.0))
            y = self.emit("Mul", x, self.emit("Sigmoid", x if alpha == 1 else self.emit("Mul", x, self.const(alpha))))
        elif n.op_type == "Gelu":
            approx = self.attrs.get("approximate", b"none")
            approx = approx.decode() if isinstance(approx, bytes) else approx
            if approx == "tanh":
                cube = self.emit("Mul", x, self.emit("Mul", x, x))
                u = self.emit(
                    "Mul",
                    self.emit("Add", x, self.emit("Mul", cube, self.const(GELU_CUBIC))),
                    self.const(SQRT_2_OVER_PI),
                )
                t = self.emit("Tanh", u)
            elif approx == "none":
                t = self.emit("Erf", self.emit("Mul", x, self.const(SQRT_HALF)))
            else:
                return None
            y = self.emit("Mul", self.emit("Mul", x, self.emit("Add", t, self.const(1.0))), self.const(0.5))
        elif n.op_type == "LayerNormalization":
            if r is None or self.opset >= 18:
                return None
            axes = list(range(int(self.attrs.get("axis", -1)) % r, r))
            d = self.emit("Sub", x, self.emit("ReduceMean", x, axes=axes, keepdims=1))
            var = self.emit("ReduceMean", self.emit("Mul", d, d), axes=axes, keepdims=1)
            sigma = self.emit("Sqrt", self.emit("Add", var, self.const(float(self.attrs.get("epsilon", 1e-5)))))
            y = self.emit("Mul", self.emit("Div", d, sigma), n.input[1])
            if len(n.input) > 2 and n.input[2]:
                y = self.emit("Add", y, n.input[2])
        else:
            return None
        self.nodes[-1].output[0] = n.output[0]
        return self.nodes
