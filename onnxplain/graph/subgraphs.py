"""Subgraphs of If/Loop/Scan: the outer tensors they read, and copies of them under fresh names.

A subgraph reads tensors of its enclosing graphs by name, without listing them as node inputs
(ONNX IR, "Graphs": names in a nested graph may refer to values of outer scopes). The walker
treats those captured tensors as extra inputs of the node that holds the subgraph, and the
canonicaliser and the If rule copy subgraph nodes into other graphs, renaming the tensors the
subgraph defines and keeping the ones it captures.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

CONTROL_FLOW = ("If", "Loop", "Scan")


def subgraphs(node) -> list:
    """The graph-valued attributes of ``node`` (then/else branches, a loop body)."""
    return [v for v in node.attrs.values() if isinstance(v, gs.Graph)]


def captured(node) -> list:
    """Tensors of enclosing scopes that ``node``'s subgraphs read (recursively), in order of first
    use; constants are left out, since they carry no cotangent."""
    found: dict = {}
    for g in subgraphs(node):
        _captured(g, found)
    return list(found.values())


def _captured(g: gs.Graph, found: dict) -> None:
    local = {t.name for t in g.inputs} | {t.name for n in g.nodes for t in n.outputs}
    for node in g.nodes:
        inner: dict = {}
        for sub in subgraphs(node):
            _captured(sub, inner)
        for t in list(node.inputs) + list(inner.values()):
            if t.name and t.name not in local and not isinstance(t, gs.Constant):
                found.setdefault(t.name, t)
    for t in g.outputs:  # an output may name an outer tensor directly
        if t.name not in local and not isinstance(t, gs.Constant):
            found.setdefault(t.name, t)


def copy_nodes(src: gs.Graph, b, mapping: dict) -> list:
    """Append copies of ``src``'s nodes to ``b.graph`` and return them.

    ``mapping`` (old name -> tensor) is pre-seeded with what ``src``'s inputs become, and may name
    existing tensors that some outputs must be written to; every other tensor ``src`` defines gets
    a fresh name from ``b``, and tensors of outer scopes are kept. Nested subgraphs are copied too.
    """
    copies = []
    for node in src.nodes:
        ins = [mapping.get(t.name, t) if t.name else t for t in node.inputs]
        outs = []
        for t in node.outputs:
            if t.name and t.name not in mapping:
                mapping[t.name] = gs.Variable(b.name(_short(t.name)), dtype=t.dtype, shape=t.shape)
            outs.append(mapping[t.name] if t.name else gs.Variable.empty())
        attrs = {k: copy_graph(v, b, mapping) if isinstance(v, gs.Graph) else v for k, v in node.attrs.items()}
        copy = gs.Node(
            node.op,
            name=b.name(_short(node.name or node.op)),
            attrs=attrs,
            inputs=ins,
            outputs=outs,
            domain=node.domain,
        )
        b.graph.nodes.append(copy)
        copies.append(copy)
    return copies


def copy_graph(g: gs.Graph, b, mapping: dict) -> gs.Graph:
    """A copy of the nested graph ``g`` with fresh names; outputs not computed inside the copy get an
    Identity (onnx's checker requires every graph output to be some node's output)."""
    new = gs.Graph(name=b.name(_short(g.name or "subgraph")), opset=g.opset)
    sb = b.into(new)
    inner = dict(mapping)
    new.inputs = []
    for t in g.inputs:
        inner[t.name] = gs.Variable(sb.name(_short(t.name)), dtype=t.dtype, shape=t.shape)
        new.inputs.append(inner[t.name])
    copy_nodes(g, sb, inner)
    produced = {t.name for n in new.nodes for t in n.outputs}
    new.outputs = [_produced(sb, inner.get(t.name, t), produced) for t in g.outputs]
    return new


def _produced(b, t, produced: set):
    if t.name in produced:
        return t
    out = b.Identity(t)
    out.dtype, out.shape = t.dtype, t.shape
    return out


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] or "t"
