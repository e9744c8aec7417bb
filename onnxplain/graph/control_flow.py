"""Control flow made plain for the walker: If on a constant condition inlined, static Loop and Scan
unrolled (ONNX spec: If, Loop, Scan).

* ``If`` whose condition is a constant (an initializer, a Constant node, or what constant folding
  resolved) becomes its taken branch.
* ``Loop`` with a constant trip count ``M <= MAX_UNROLL`` and a condition that the body passes
  through unchanged becomes M copies of its body; scan outputs are stacked with Unsqueeze + Concat.
* ``Scan`` (opset 9+) whose sequence length is static and ``<= MAX_UNROLL`` becomes one body copy
  per step, reading its slice with Gather, in the given directions and axes.

After this the ordinary rules apply. A Loop or Scan that stays is refused by the walker with
:func:`refusal` when it lies on the explained path; an If that stays gets the If rule.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxplain.graph.builder import Builder, static_shape
from onnxplain.graph.subgraphs import copy_nodes, subgraphs

MAX_UNROLL = 256


def constant_value(t):
    """The value of ``t`` when it is an initializer or a Constant node's output, else None."""
    if isinstance(t, gs.Constant):
        return t.values
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant":
        value = t.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return value.values
    return None


def trip_count(node) -> int | None:
    """A Loop's static trip count, or None when only known at run time."""
    m = node.inputs[0] if node.inputs else None
    value = None if m is None or not m.name else constant_value(m)
    return None if value is None else int(np.asarray(value).reshape(-1)[0])


def _condition_fixed(node) -> bool:
    """True when the Loop starts with a true (or no) condition and its body passes it through."""
    if len(node.inputs) > 1 and node.inputs[1].name:
        start = constant_value(node.inputs[1])
        if start is None or not bool(np.asarray(start).reshape(-1)[0]):
            return False
    body = node.attrs["body"]
    out = body.outputs[0]
    if out.name == body.inputs[1].name:
        return True
    producer = out.inputs[0] if len(out.inputs) == 1 else None
    if producer is not None and producer.op == "Identity" and producer.inputs[0].name == body.inputs[1].name:
        return True
    value = constant_value(out)
    return value is not None and bool(np.asarray(value).reshape(-1)[0])


def scan_length(node) -> int | None:
    """A Scan's static sequence length, or None."""
    n_scan = node.attrs.get("num_scan_inputs", 0)
    first = node.inputs[len(node.inputs) - n_scan] if n_scan else None
    shape = static_shape(first) if first is not None else None
    if shape is None:
        return None
    axis = (list(node.attrs.get("scan_input_axes") or [0]))[0]
    return shape[axis % len(shape)]


def refusal(node) -> str:
    """One line saying why a Loop or Scan on the explained path cannot be differentiated."""
    fix = f"onnxplain differentiates {node.op} by unrolling it, which needs"
    if node.op == "Scan":
        n = scan_length(node)
        if n is None:
            return (
                f"Scan '{node.name}': sequence length is only known at run time; {fix} a static sequence length "
                f"<= {MAX_UNROLL} (export or specialise the model with fixed input shapes)"
            )
        return (
            f"Scan '{node.name}': sequence length {n} exceeds the unrolling limit {MAX_UNROLL}; "
            f"{fix} <= {MAX_UNROLL} steps"
        )
    n = trip_count(node)
    if n is None:
        return (
            f"Loop '{node.name}': trip count is only known at run time; {fix} a constant trip count "
            f"<= {MAX_UNROLL} (export or specialise the model with fixed shapes and loop bounds)"
        )
    if n <= 0:
        return (
            f"Loop '{node.name}': trip count {n}: the Loop never runs; remove it from the model or give it iterations"
        )
    if n > MAX_UNROLL:
        return (
            f"Loop '{node.name}': trip count {n} exceeds the unrolling limit {MAX_UNROLL}; "
            f"{fix} <= {MAX_UNROLL} iterations"
        )
    return (
        f"Loop '{node.name}': its condition is computed at run time, so the number of iterations is unknown; "
        f"{fix} a condition that stays true (a fixed trip count <= {MAX_UNROLL})"
    )


def inline_control_flow(graph: gs.Graph, opset: int, b: Builder | None = None, known: dict | None = None) -> int:
    """Inline constant-condition Ifs and unroll static Loops/Scans in ``graph`` and its remaining
    subgraphs, repeatedly (an inlined branch may hold more). Returns the number of nodes replaced;
    the caller re-infers shapes when it is not 0."""
    if not any(n.op in ("If", "Loop", "Scan") for n in graph.nodes):
        return 0
    b = b or Builder(graph, opset, prefix="onnxplain/unroll")
    known = known if known is not None else dict(graph.tensors())  # the outermost graph's tensors, by name
    done, changed = 0, True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op == "If" and constant_value(node.inputs[0]) is not None:
                taken = bool(np.asarray(constant_value(node.inputs[0])).reshape(-1)[0])
                _inline(node, node.attrs["then_branch" if taken else "else_branch"], b, known)
            elif (
                node.op == "Loop"
                and trip_count(node) is not None
                and 0 < trip_count(node) <= MAX_UNROLL
                and _condition_fixed(node)
            ):
                _unroll_loop(node, b, known)
            elif (
                node.op == "Scan"
                and node.domain in (None, "")
                and opset >= 9
                and (scan_length(node) or 0) > 0
                and scan_length(node) <= MAX_UNROLL
            ):
                _unroll_scan(node, b, known)
            else:
                continue
            graph.nodes = [n for n in graph.nodes if n is not node]  # (gs nodes compare by value)
            done += 1
            changed = True
    for node in graph.nodes:
        for sub in subgraphs(node):
            done += inline_control_flow(sub, opset, b.into(sub), known)
    return done


def _detach(node) -> list:
    outs = list(node.outputs)
    node.inputs.clear()
    node.outputs.clear()
    return outs


def _write(b: Builder, value, out) -> None:
    """Make ``out`` (an existing tensor, its producer detached) the output of Identity(value)."""
    b.graph.nodes.append(gs.Node("Identity", name=b.name("Identity_node"), inputs=[value], outputs=[out]))


def _inline(node, branch: gs.Graph, b: Builder, known: dict) -> None:
    b.scope = f"{b.prefix}/{node.name}"
    outs = _detach(node)
    defined = {t.name for n in branch.nodes for t in n.outputs}
    mapping, late = {}, []
    for t, out in zip(branch.outputs, outs):
        if t.name in defined and t.name not in mapping:
            mapping[t.name] = out  # the branch's node writes the If's output tensor itself
        else:
            late.append((t, out))
    copy_nodes(branch, b, mapping)
    for t, out in late:
        _write(b, _resolve(known, mapping.get(t.name, t)), out)


def _run_body(b: Builder, body: gs.Graph, feeds: list, known: dict) -> list:
    """Copy ``body`` once with its inputs bound to ``feeds``; returns the copy's outputs."""
    mapping = {t.name: v for t, v in zip(body.inputs, feeds)}
    copy_nodes(body, b, mapping)
    return [_resolve(known, mapping.get(t.name, t)) for t in body.outputs]


def _resolve(known: dict, t):
    """A subgraph output that names an outer tensor is imported as a separate, unconnected tensor of
    the same name; use the outer one."""
    return t if t.inputs or isinstance(t, gs.Constant) else known.get(t.name, t)


def _stack(b: Builder, values: list, axis: int, out) -> None:
    parts = [b.unsqueeze(v, [axis]) for v in values]
    b.graph.nodes.append(
        gs.Node("Concat", name=b.name("Concat_node"), attrs={"axis": axis}, inputs=parts, outputs=[out])
    )


def _unroll_loop(node, b: Builder, known: dict) -> None:
    body, n = node.attrs["body"], trip_count(node)
    state = list(node.inputs[2:])
    outs = _detach(node)
    true = b.const(np.array(True))
    scans: list = [[] for _ in range(len(body.outputs) - 1 - len(state))]
    for i in range(n):
        b.scope = f"{b.prefix}/{node.name}/{i}"
        res = _run_body(b, body, [b.const(np.array(i, dtype=np.int64)), true] + state, known)
        state = res[1 : 1 + len(state)]
        for k, v in enumerate(res[1 + len(state) :]):
            scans[k].append(v)
    for v, out in zip(state, outs):
        _write(b, v, out)
    for values, out in zip(scans, outs[len(state) :]):
        _stack(b, values, 0, out)


def _unroll_scan(node, b: Builder, known: dict) -> None:
    body, steps = node.attrs["body"], scan_length(node)
    n_scan = node.attrs["num_scan_inputs"]
    n_state = len(node.inputs) - n_scan
    state, seqs = list(node.inputs[:n_state]), list(node.inputs[n_state:])
    in_axes = list(node.attrs.get("scan_input_axes") or [0] * n_scan)
    in_dirs = list(node.attrs.get("scan_input_directions") or [0] * n_scan)
    outs = _detach(node)
    n_out = len(body.outputs) - n_state
    out_axes = list(node.attrs.get("scan_output_axes") or [0] * n_out)
    out_dirs = list(node.attrs.get("scan_output_directions") or [0] * n_out)
    scans: list = [[] for _ in range(n_out)]
    for step in range(steps):
        b.scope = f"{b.prefix}/{node.name}/{step}"
        slices = [
            b.Gather(s, b.const(np.array(steps - 1 - step if d else step, dtype=np.int64)), axis=a)
            for s, a, d in zip(seqs, in_axes, in_dirs)
        ]
        res = _run_body(b, body, state + slices, known)
        state = res[:n_state]
        for k, v in enumerate(res[n_state:]):
            scans[k].append(v)
    for v, out in zip(state, outs):
        _write(b, v, out)
    for values, axis, d, out in zip(scans, out_axes, out_dirs, outs[n_state:]):
        _stack(b, values[::-1] if d else values, axis, out)
