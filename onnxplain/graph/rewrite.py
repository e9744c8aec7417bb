"""Build the explanation graph: the forward graph plus a backward subgraph and a method head.

The contract (see README):

* inputs: every original input, plus ``target`` (int64 [N], default ``[-1]`` = argmax) or, in
  weights mode, ``target_weights`` (the explained output's shape); ``baseline`` where a method
  uses one (default zeros);
* outputs: every original output, plus ``attribution`` and, in class mode, ``target_index``
  (the class that was explained for each item).

The explained scalar is ``sum(seed * logits)``; a class index becomes a one-hot seed on the
class axis. By default the logits feeding a final Softmax/LogSoftmax/Sigmoid are explained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxplain import __version__
from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.backward import Backward, Fold, FoldError, GradientRules
from onnxplain.graph.builder import Builder, np_dtype, rank
from onnxplain.graph.canonicalize import Canonical, canonicalize, export_graph, find_logits

FOLDED = ("gradient", "input_x_gradient", "saliency")  # heads whose K targets share one backward pass
RESERVED = ("target", "target_weights", "baseline", "attribution", "target_index", "attribution_layer")


@dataclass
class Options:
    """What to explain and how; every field has a sensible default."""

    input: str | None = None  # explained input (default: first float input)
    output: str | None = None  # explained output (default: first float output)
    probabilities: bool = False  # explain the Softmax/Sigmoid output instead of its logits
    target_mode: str = "class"  # "class" (int64 target [N]), "classes" (int64 [N, K]) or "weights" (a seed tensor)
    class_axis: int | None = None  # default: 1 for rank-4 outputs, else the last axis
    channel_axis: int = 1  # for saliency's reduction over channels
    steps: int = 32  # integrated gradients
    chunk: int = 8  # integrated gradients: path points per forward+backward pass (bench/RESULTS.md)
    samples: int = 16  # smoothgrad
    noise: float = 0.15  # smoothgrad: sigma / (max(x) - min(x))
    seed: int = 0
    rules: object = None  # a rule-set file (or RuleSet) replacing the method's own rules/<method>.toml
    layer: str | None = None  # CAM methods: the tapped layer (tensor or node name; default: automatic)
    prefix_tokens: int | None = None  # CAM methods on token maps: tokens before the patch grid
    baseline_input: bool = False  # deeplift: a `baseline` input (else zeros, fixed, folded at session start)


@dataclass
class Context:
    """What a method head needs: the graph, the explained tensors and a backward pass."""

    can: Canonical
    b: Builder
    x: gs.Variable
    logits: gs.Tensor
    seed: gs.Tensor
    options: Options
    defaults: dict = field(default_factory=dict)  # input name -> default initializer value
    forward_nodes: list = field(default_factory=list)  # the model's own nodes, before any emission
    extra_outputs: list = field(default_factory=list)  # (name, tensor, shape) more outputs a head adds
    meta: dict = field(default_factory=dict)  # more metadata_props a head records (e.g. the CAM layer)
    fold: object = None  # target_mode "classes": the K seeds share one backward pass (backward.Fold)

    def backward(self, seed=None, x=None, logits=None, nodes=None, rules=None):
        """The cotangent of ``x``; with K targets ([N, K] classes) it is [N, K, *x.shape[1:]]."""
        rules = rules or (self.rules("gradient") if self.options.rules else GradientRules())
        if self.fold is not None and (x is not None or not isinstance(rules, GradientRules)):
            raise FoldError("many targets in one pass: only the plain gradient heads fold K targets")
        bw = Backward(self.can.graph, self.b, rules, fold=self.fold)
        x = x if x is not None else self.x
        logits = logits if logits is not None else self.logits
        seed = seed if seed is not None else self.seed
        g = bw.run([(logits, seed)], [x], nodes=nodes)[x.name]
        if self.fold is None:
            return g
        b = self.b  # [K*N, ...] (K-major) -> [K, N, ...] -> [N, K, ...]
        g = b.Reshape(g, b.Concat(self.fold.k, b.ints([-1]), b.shape_of(x, 1), axis=0))
        return b.transpose(g, [1, 0] + list(range(2, len(x.shape) + 1)))

    def rules(self, method: str, **env):
        """The rule set for ``method`` (the user's file if given, else rules/<method>.toml), bound
        to an :class:`~onnxplain.rules.ruleset.Env` for this graph."""
        from onnxplain.rules.ruleset import Env, RuleSet, builtin_ruleset, load_ruleset

        given = self.options.rules
        ruleset = given if isinstance(given, RuleSet) else load_ruleset(given) if given else builtin_ruleset(method)
        first = {n.name for n in self.forward_nodes if any(t.name == self.x.name for t in n.inputs)}
        return ruleset.bind(Env(x=self.x, first=first, **env))

    def add_input(self, name, dtype, shape, default=None):
        v = gs.Variable(name, dtype=dtype, shape=shape)
        self.can.graph.inputs.append(v)
        if default is not None:
            self.defaults[name] = np.asarray(default, dtype=dtype)
        return v

    def clone_forward(self, replace: dict, batch_symbol: str):
        """Copy the nodes that depend on ``replace``'s tensors (weights stay shared).

        Returns (mapping old name -> new tensor, cloned nodes). Dimensions equal to the explained
        input's batch dimension are renamed ``batch_symbol`` in the copies' shapes.
        """
        b = self.b
        old_batch = self.x.shape[0] if self.x.shape else None
        named = old_batch not in (None, "")  # an unnamed batch axis cannot be told from other unknown dims
        mapping, cloned = dict(replace), []
        for node in self.forward_nodes:
            if not any(t.name in mapping for t in node.inputs):
                continue
            ins = [mapping.get(t.name, t) for t in node.inputs]
            outs = []
            for t in node.outputs:
                shape = None if t.shape is None else [batch_symbol if named and d == old_batch else d for d in t.shape]
                v = gs.Variable(b.name(f"{t.name}:copy"), dtype=t.dtype, shape=shape)
                mapping[t.name] = v
                outs.append(v)
            copy = gs.Node(
                node.op,
                name=b.name(node.name or node.op),
                attrs=dict(node.attrs),
                inputs=ins,
                outputs=outs,
                domain=node.domain,
            )
            self.can.graph.nodes.append(copy)
            cloned.append(copy)
        return mapping, cloned


def class_axis_of(logits, options: Options) -> int:
    r = rank(logits)
    if r is None:
        raise ShapeError(
            f"explained output '{logits.name}' has an unknown rank; class targets need its batch and class axes"
        )
    if r < 2:
        raise OnnxplainError(
            f"explained output '{logits.name}' needs a batch axis for class targets; use target weights instead"
        )
    from onnxplain.validate import class_axis

    return class_axis(options.class_axis, r, f"explained output '{logits.name}'")


def class_seed(ctx: Context):
    """target [N] (-1 = argmax) -> one-hot seed of the logits' shape, and the resolved targets."""
    b, logits = ctx.b, ctx.logits
    r, ax = rank(logits), class_axis_of(logits, ctx.options)
    batch = ctx.x.shape[0] if ctx.x.shape else "batch"
    target = ctx.add_input("target", np.int64, [batch if isinstance(batch, str) else "target_batch"], default=[-1])
    others = [i for i in range(1, r) if i != ax]
    scores = b.reduce("ReduceSum", logits, others, keepdims=False) if others else logits
    argmax = b.ArgMax(scores, axis=1, keepdims=0)
    chosen = b.Where(b.Less(target, b.ints([0])), argmax, target)
    depth = b.squeeze(b.slice(b.Shape(logits), [ax], [ax + 1], [0]), [0])  # a scalar, as OneHot's spec prefers
    onehot = b.OneHot(chosen, depth, b.const([0, 1], like=logits), axis=-1)
    if others:
        onehot = b.Expand(b.unsqueeze(onehot, others), b.Shape(logits))
    return onehot, chosen


def classes_seed(ctx: Context):
    """target [N, K] (-1 = argmax) -> K one-hot seeds stacked K-major on the batch axis ([K*N, ...] of the
    logits' shape), the resolved targets [N, K], and the :class:`Fold` that runs them in one backward pass."""
    b, logits, x = ctx.b, ctx.logits, ctx.x
    r, ax = rank(logits), class_axis_of(logits, ctx.options)
    batch = x.shape[0] if x.shape else None
    if not isinstance(batch, str) or not batch:
        raise FoldError(f"many targets in one pass need a symbolic batch axis on input '{x.name}' (it is {batch})")
    target = ctx.add_input("target", np.int64, [batch, "targets"], default=[[-1]])
    others = [i for i in range(1, r) if i != ax]
    scores = b.reduce("ReduceSum", logits, others, keepdims=False) if others else logits
    argmax = b.ArgMax(scores, axis=1, keepdims=1)  # [N, 1]
    chosen = b.Where(b.Less(target, b.ints([0])), argmax, target)
    depth = b.squeeze(b.slice(b.Shape(logits), [ax], [ax + 1], [0]), [0])
    onehot = b.OneHot(b.transpose(chosen, [1, 0]), depth, b.const([0, 1], like=logits), axis=-1)  # [K, N, C]
    onehot = b.Reshape(onehot, b.Concat(b.ints([-1]), b.unsqueeze(depth, [0]), axis=0))  # [K*N, C]
    if others:
        full = b.Concat(b.shape_of(onehot, 0, 1), b.shape_of(logits, 1), axis=0)
        onehot = b.Expand(b.unsqueeze(onehot, others), full)
    ctx.fold = Fold(b, b.shape_of(target, 1, 2), batch)
    return onehot, chosen


def build(model, method: str = "gradient", options: Options | None = None, **kw) -> onnx.ModelProto:
    """Return the explanation graph of ``model`` for ``method`` as an ``onnx.ModelProto``."""
    from onnxplain.methods.catalog import method as lookup

    options = options or Options(**kw)
    entry = lookup(method)
    if entry.head is None:
        raise OnnxplainError(
            f"{entry.name} runs {entry.kind} passes from Python and has no single explanation "
            "graph; use `onnxplain explain` (or Explainer) for it"
        )
    method = entry.name
    if options.target_mode not in ("class", "classes", "weights"):
        raise OnnxplainError(f"target mode must be 'class', 'classes' or 'weights', not '{options.target_mode}'")
    can = model if isinstance(model, Canonical) else canonicalize(model)
    graph = can.graph
    taken = [n for n in RESERVED if n in graph.tensors()]
    if taken:
        raise OnnxplainError(f"the model already has tensors named {taken}; these names are reserved")
    b = Builder(graph, can.opset)
    x = can.input(options.input)
    out = can.output(options.output)
    logits = out if options.probabilities else find_logits(graph, out)[0]
    ctx = Context(can, b, x, logits, None, options, forward_nodes=list(graph.nodes))
    if options.target_mode == "weights":
        ctx.seed = ctx.add_input("target_weights", np_dtype(logits), logits.shape)
        chosen = None
    elif options.target_mode == "classes":
        if method not in FOLDED:
            raise FoldError(f"{method} does not explain many targets in one pass (only {', '.join(FOLDED)})")
        ctx.seed, chosen = classes_seed(ctx)
    else:
        ctx.seed, chosen = class_seed(ctx)
    attribution, shape = entry.head(ctx)
    batch = ctx.x.shape[0] if ctx.x.shape else "batch"
    if ctx.fold is not None and shape is not None:
        shape = [shape[0], "targets", *shape[1:]]
    graph.outputs.append(_named(b, attribution, "attribution", np_dtype(x), shape))
    if chosen is not None:
        graph.outputs.append(_named(b, chosen, "target_index", np.int64, [batch] + (["targets"] if ctx.fold else [])))
    for name, tensor, tshape in ctx.extra_outputs:
        graph.outputs.append(_named(b, tensor, name, np_dtype(x), tshape))
    graph.cleanup()
    graph.toposort()
    m = export_graph(graph, can.model)
    keep = [vi for vi in m.graph.value_info if vi.type.tensor_type.HasField("shape")]
    del m.graph.value_info[:]
    m.graph.value_info.extend(keep)
    for name, value in ctx.defaults.items():
        m.graph.initializer.append(numpy_helper.from_array(value, name))
    if m.ir_version < 4:
        m.ir_version = 4  # inputs with default initializers
    meta = {
        "onnxplain.version": __version__,
        "onnxplain.method": method,
        "onnxplain.input": x.name,
        "onnxplain.explained": logits.name,
        "onnxplain.target_mode": options.target_mode,
        **ctx.meta,
    }
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    return m


def _named(b: Builder, t, name: str, dtype, shape):
    if np_dtype(t) is not None and np_dtype(t) != np.dtype(dtype):  # e.g. a float32 CAM for a float16 input
        t = b.Cast(t, to=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    out = b.Identity(t)
    out.name, out.dtype, out.shape = name, dtype, shape
    return out
