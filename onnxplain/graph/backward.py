"""Reverse-mode rewriting: emit the backward subgraph of an ONNX graph.

The walker visits the nodes on the explained path (those reachable forward from the inputs
being explained and backward from the seeds) in reverse topological order. For each one it asks
the rule set for a rule, sums cotangents where a tensor fans out, and sums broadcast axes back
to each input's shape. Integer tensors (shape arithmetic, indices) carry no cotangent.

A node holding subgraphs (If, Loop, Scan) also depends on the outer tensors its subgraphs read by
name (:func:`onnxplain.graph.subgraphs.captured`). An If gets a backward If on the same condition
whose branches differentiate the forward branches; canonicalisation has already inlined Ifs on
constant conditions and unrolled static Loops and Scans, so one left on the path is refused.

Every node without a rule is collected first and reported in one error before anything is
emitted. The cost is linear in the number of nodes.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError, UnsupportedOpsError
from onnxplain.graph.builder import Builder, is_float, np_dtype
from onnxplain.graph.control_flow import refusal
from onnxplain.graph.subgraphs import captured, copy_nodes, subgraphs
from onnxplain.rules.vjp import Rule, load_all


class GradientRules:
    """The true-gradient rule set: every op gets its VJP from :data:`onnxplain.rules.vjp.VJP`."""

    name = "gradient"

    def __init__(self):
        self.table = load_all()

    def start(self, fwd: set) -> None:
        """Called by the walker with the names of the tensors on the explained path."""

    def lookup(self, node) -> Rule | None:
        key = node.op if node.domain in (None, "", "ai.onnx") else f"{node.domain}:{node.op}"
        return self.table.get(key)


# ops the walker differentiates itself, with the rule set's rules inside (no table entry)
STRUCTURAL = {"If"}

# inputs whose values never reach the output: only their type or shape is read
VALUE_FREE = {
    "CastLike": {1},
    "Shape": {0},
    "Size": {0},
    "EyeLike": {0},
    "RandomNormalLike": {0},
    "RandomUniformLike": {0},
    "RandomNormal": set(),
    "Bernoulli": {0},
}


# integer outputs that carry a cotangent: a quantiser's output stands for the real x / s + zp that it
# rounds (straight-through, onnxplain/rules/vjp/quantize.py); DynamicQuantizeLinear's scale is a constant
CARRIES = {"QuantizeLinear": (0,), "DynamicQuantizeLinear": (0,)}


def _value_inputs(node):
    """The inputs whose values reach the outputs, and the outer tensors the node's subgraphs read."""
    skip = VALUE_FREE.get(node.op, ())
    ins = [t for i, t in enumerate(node.inputs) if i not in skip]
    return ins + captured(node) if subgraphs(node) else ins


def explained_path(nodes, wrt_names, seed_names):
    """(forward-reachable float tensor names, path nodes in topological order)."""
    fwd = set(wrt_names)
    active = []
    for node in nodes:
        if any(t.name in fwd for t in _value_inputs(node)):
            active.append(node)
            for k, t in enumerate(node.outputs):
                if k in CARRIES[node.op] if node.op in CARRIES else is_float(t) or t.dtype is None:
                    fwd.add(t.name)
    back = set(seed_names)
    path = []
    for node in reversed(active):
        if any(t.name in back and t.name in fwd for t in node.outputs):
            path.append(node)
            for t in _value_inputs(node):
                if t.name in fwd:
                    back.add(t.name)
    path.reverse()
    return fwd, path


# ops whose rules build tensors of the forward batch size themselves (not from the node's tensors)
UNFOLDED = {"Loop", "Scan", "GRU", "LSTM", "RNN"}


class FoldError(OnnxplainError):
    """Many targets cannot share one backward pass in this graph (callers fall back to one pass each)."""


class StandIn:
    """What a rule reads of a node (op, name, attrs, inputs, outputs, domain), with other tensors."""

    def __init__(self, node, inputs, outputs):
        self.op, self.name, self.attrs, self.domain = node.op, node.name, node.attrs, node.domain
        self.inputs, self.outputs = inputs, outputs


class Fold:
    """K seeds in one backward pass: every cotangent carries K copies of the batch on its batch axis
    (K-major: item n of seed k at k * N + n), and the rules read the forward tensors tiled K times on
    that axis, so the forward runs once. Reshapes that merge the batch with later axes keep the K-major
    order; a tensor whose batch axis cannot be found (``batch``, a symbolic dim, missing) is refused."""

    def __init__(self, b: Builder, k, batch: str):
        self.b, self.k, self.batch = b, k, batch  # k: int64 [1], the number of seeds
        self._tiles: dict = {}
        self.reach: set = set()  # every tensor computed from the explained input, of any type (set by run)

    def axis(self, t) -> int:
        shape = getattr(t, "shape", None)
        axes = [] if shape is None else [i for i, d in enumerate(shape) if d == self.batch]
        if len(axes) != 1:
            raise FoldError(
                f"many targets in one pass: tensor '{t.name}' has no single batch axis "
                f"('{self.batch}') in its shape {None if shape is None else list(shape)}"
            )
        return axes[0]

    def tile(self, t):
        if t.name not in self._tiles:
            a, r = self.axis(t), len(t.shape)
            reps = self.b.Concat(*[self.k if i == a else self.b.ints([1]) for i in range(r)], axis=0)
            v = self.b.Tile(t, reps)
            v.dtype, v.shape = t.dtype, [f"{self.batch}*targets" if i == a else d for i, d in enumerate(t.shape)]
            self._tiles[t.name] = v
        return self._tiles[t.name]

    def node(self, node, fwd):
        """The node as its rule should see it: forward tensors on the path tiled (and integer or boolean
        ones computed from the input, such as a Where's condition, when they have the batch axis), other
        outputs dropped."""
        ins = [
            self.tile(t)
            if t.name
            and (
                t.name in fwd
                and not isinstance(t, gs.Constant)
                or t.name in self.reach
                and self.batch in (t.shape or ())
            )
            else t
            for t in node.inputs
        ]
        outs = [self.tile(t) if t.name and t.name in fwd else gs.Variable.empty() for t in node.outputs]
        return StandIn(node, ins, outs)


class Backward:
    """Builds cotangents of ``wrt`` tensors given seed cotangents, in one reverse pass.

    With ``fold`` (a :class:`Fold`), the seeds hold K cotangents each on the batch axis and so do the
    results: one backward pass for K targets."""

    def __init__(self, graph: gs.Graph, builder: Builder, rules=None, fold: Fold | None = None):
        self.graph = graph
        self.b = builder
        self.rules = rules or GradientRules()
        self.fold = fold

    def run(self, seeds: list, wrt: list, nodes=None, outer_fwd: frozenset = frozenset()) -> dict:
        """``seeds``: [(forward tensor, its cotangent)]; returns {wrt name: cotangent}.

        ``outer_fwd``: the explained path's tensors in enclosing graphs, when this walks a branch."""
        nodes = list(self.graph.nodes) if nodes is None else nodes
        fwd, path = explained_path(nodes, [t.name for t in wrt], [t.name for t, _ in seeds])
        self._fwd = fwd | outer_fwd
        if self.fold is not None:
            reach = {t.name for t in wrt}
            for node in nodes:
                if any(t.name in reach for t in _value_inputs(node)):
                    reach.update(t.name for t in node.outputs)
            self.fold.reach = reach
        self.rules.start(self._fwd)
        plan = [(node, self._vjp_if if node.op in STRUCTURAL else self.rules.lookup(node)) for node in path]
        missing = self._missing(path, self._fwd) if not outer_fwd else []  # branches: checked by the outermost
        if missing:
            raise UnsupportedOpsError(missing, self.rules.name)

        pending: dict[str, list] = {}
        for t, g in seeds:
            pending.setdefault(t.name, []).append(g)
        wanted, taken = {t.name for t in wrt}, {}  # a wrt tensor downstream of another keeps its cotangent
        for node, rule in reversed(plan):
            g_out = [self._take(pending, t) if t.name in fwd else None for t in node.outputs]
            taken.update((t.name, g) for t, g in zip(node.outputs, g_out) if t.name in wanted and g is not None)
            if all(g is None for g in g_out):
                continue
            self.b.scope = f"{self.b.prefix}/{self.rules.name}/{node.name or node.op}"
            if node.op == "If":
                if self.fold is not None:
                    raise FoldError(f"many targets in one pass: If '{node.name}' is not supported")
                for t, g in self._vjp_if(node, g_out):
                    pending.setdefault(t.name, []).append(g)
                continue
            if self.fold is not None and node.op in UNFOLDED:
                raise FoldError(f"many targets in one pass: {node.op} '{node.name}' is not supported")
            g_in = rule(self.b, node if self.fold is None else self.fold.node(node, fwd), g_out)
            if len(g_in) < len(node.inputs):
                g_in = list(g_in) + [None] * (len(node.inputs) - len(g_in))
            value_free = VALUE_FREE.get(node.op, ())
            for i, (t, g) in enumerate(zip(node.inputs, g_in)):
                if t.name not in fwd or isinstance(t, gs.Constant) or i in value_free:
                    continue
                if g is None:
                    raise OnnxplainError(
                        f"rule '{rule.name}' for {node.op} '{node.name}' gives no cotangent for input {i} "
                        f"('{t.name}'), which lies on the explained path"
                    )
                if rule.broadcast:
                    if self.fold is None:
                        g = self.b.unbroadcast(g, t, node.outputs[0].shape)
                    else:
                        tt, out = (self.fold.tile(u) if u.name in fwd else u for u in (t, node.outputs[0]))
                        g = self.b.unbroadcast(g, tt, out.shape)
                pending.setdefault(t.name, []).append(g)
        self.b.scope = self.b.prefix
        out = {}
        for t in wrt:
            g = self._take(pending, t)
            g = g if g is not None else taken.get(t.name)
            zero = self.b.zeros_like(t if self.fold is None else self.fold.tile(t))
            out[t.name] = g if g is not None else zero
        return out

    def _missing(self, path, fwd) -> list:
        """[(op, name)] of the nodes on ``path``, and on the paths inside its If branches, that have
        no rule; a Loop or Scan left there (not unrollable) raises its own one-line error."""
        missing = []
        for node in path:
            if node.op in ("Loop", "Scan"):
                raise OnnxplainError(refusal(node))
            if node.op in STRUCTURAL:
                wrt = [t.name for t in captured(node) if t.name in fwd]
                for g in subgraphs(node):
                    inner_fwd, inner_path = explained_path(list(g.nodes), wrt, [t.name for t in g.outputs])
                    missing += self._missing(inner_path, fwd | inner_fwd)
            elif self.rules.lookup(node) is None:
                missing.append((node.op, node.name))
        return missing

    def _vjp_if(self, node, g_out) -> list:
        """The VJP of ``If(cond)``: ``If(cond)`` again, each branch a copy of the forward branch (its
        values are not visible outside it) followed by that copy's backward pass, by the same rules,
        from the output cotangents to the captured outer tensors on the explained path (zeros for
        those a branch does not read). Returns [(captured tensor, its cotangent)]. ONNX spec: If."""
        if getattr(getattr(self.rules, "env", None), "ref", None):
            raise OnnxplainError(
                f"If '{node.name}': rule set '{self.rules.name}' reads baseline values, which are not "
                "computed inside If branches; explain with gradient-based methods or fix the condition"
            )
        targets = [t for t in captured(node) if t.name in self._fwd and is_float(t)]
        if not targets:
            return []
        outer_fwd = self._fwd
        branches = {}
        for key in ("then_branch", "else_branch"):
            fg = node.attrs[key]
            bg = gs.Graph(name=self.b.name(f"{key}_vjp"), opset=fg.opset)
            sb = self.b.into(bg)
            mapping: dict = {}
            copies = copy_nodes(fg, sb, mapping)
            seeds = [(mapping.get(t.name, t), g) for t, g in zip(fg.outputs, g_out) if g is not None]
            grads = Backward(bg, sb, self.rules).run(seeds, targets, nodes=copies, outer_fwd=outer_fwd)
            bg.outputs = []
            for t in targets:
                out = sb.Identity(grads[t.name])
                out.dtype, out.shape = t.dtype, t.shape
                bg.outputs.append(out)
            branches[key] = bg
        self.rules.start(outer_fwd)
        outs = self.b.emit("If", node.inputs[0], outputs=len(targets), dtype=[np_dtype(t) for t in targets], **branches)
        outs = outs if isinstance(outs, list) else [outs]
        for o, t in zip(outs, targets):
            o.shape = t.shape
        return list(zip(targets, outs))

    def _take(self, pending, t):
        gs_ = pending.pop(t.name, None)
        if not gs_:
            return None
        if len(gs_) == 1:
            return gs_[0]
        self.b.scope = f"{self.b.prefix}/accumulate"
        return self.b.Sum(*gs_)
