"""``onnxplain inspect``: what a model looks like to onnxplain.

(Named ``report`` rather than ``inspect`` so that it can never shadow the standard library's
``inspect`` module.)

:func:`describe` returns a JSON-ready dict: inputs/outputs with symbolic dims, opsets,
producer, node count, an op-type histogram with gradient-rule coverage and explained-path
counts, the explained tensors (and whether a Softmax/Sigmoid was stripped to reach the logits),
the unsupported nodes on the explained path, candidate layers for CAM methods, and the
decompositions that canonicalisation fused into single ops (:mod:`onnxplain.graph.fuse`).
:func:`format_text` renders it for the terminal.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from onnxplain.errors import OnnxplainError


def _dims(shape) -> list | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?") for d in shape]


def _value_info(vi: onnx.ValueInfoProto) -> dict:
    t = vi.type
    if t.HasField("tensor_type"):
        tt = t.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower() if tt.elem_type else "?"
        shape = None
        if tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return {"name": vi.name, "dtype": dtype, "shape": shape}
    kind = t.WhichOneof("value") or "?"
    return {"name": vi.name, "dtype": kind.replace("_type", ""), "shape": None}


def _op_key(op: str, domain: str | None) -> str:
    return op if domain in (None, "", "ai.onnx") else f"{domain}:{op}"


def _subgraph_nodes(graph: onnx.GraphProto) -> int:
    n = 0
    for node in graph.node:
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                n += len(g.node) + _subgraph_nodes(g)
    return n


def describe(model, input: str | None = None, output: str | None = None, probabilities: bool = False) -> dict:
    """Everything ``onnxplain inspect`` reports, as a JSON-ready dict."""
    from onnxplain.graph.backward import STRUCTURAL, GradientRules, explained_path
    from onnxplain.graph.canonicalize import canonicalize, find_logits
    from onnxplain.graph.fuse import summary
    from onnxplain.graph.load import load_model

    proto = load_model(model)
    g = proto.graph
    inits = {t.name for t in g.initializer}
    info: dict = {
        "model": str(model) if not isinstance(model, onnx.ModelProto) else None,
        "producer": {"name": proto.producer_name, "version": proto.producer_version},
        "ir_version": proto.ir_version,
        "opsets": {(imp.domain or "ai.onnx"): imp.version for imp in proto.opset_import},
        "inputs": [_value_info(vi) for vi in g.input if vi.name not in inits],
        "outputs": [_value_info(vi) for vi in g.output],
        "nodes": len(g.node),
        "subgraph_nodes": _subgraph_nodes(g),
        "parameters": int(sum(int(np.prod(t.dims)) for t in g.initializer)),
    }
    table = {**GradientRules().table, **dict.fromkeys(STRUCTURAL)}  # If: the walker's own rule
    hist = Counter(_op_key(n.op_type, n.domain) for n in g.node)

    explained: dict = {}
    path_ops: Counter = Counter()
    unsupported: list = []
    cam: list = []
    fused: list = []
    try:
        can = canonicalize(proto)
        fused = can.fused
        x = can.input(input)
        out = can.output(output)
        logits, stripped = (out, []) if probabilities else find_logits(can.graph, out)
        explained = {
            "input": x.name,
            "input_shape": _dims(x.shape),
            "output": out.name,
            "logits": logits.name,
            "logits_shape": _dims(logits.shape),
            "stripped": stripped,
        }
        _, path = explained_path(list(can.graph.nodes), [x.name], [logits.name])
        for node in path:
            key = _op_key(node.op, node.domain)
            path_ops[key] += 1
            if key not in table:
                unsupported.append({"op": key, "name": node.name})
        cam = cam_candidates(path)
        explained["path_nodes"] = len(path)
        explained["needs_feeds"] = [t.name for t in can.graph.inputs if t.name not in _sources(x)]
        info["exports"] = try_exports(proto, input, output, probabilities)
        from onnxplain.targets import guess_task

        explained["task"], explained["task_reason"] = guess_task(can.graph)
    except OnnxplainError as exc:
        explained = {"error": str(exc)}
    except Exception as exc:  # the analysis must not take the report down with it
        explained = {"error": f"analysis failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"}
    for key in path_ops:  # ops that only appear after canonicalisation
        hist.setdefault(key, 0)
    info["op_types"] = [
        {"op": op, "count": hist[op], "on_path": path_ops.get(op, 0), "rule": op in table}
        for op in sorted(hist, key=lambda k: (-hist[k], k))
    ]
    info["explained"] = explained
    info["fused"] = {
        "summary": summary(fused),
        "nodes": [{"pattern": f.pattern, "op": f.op, "name": f.node, "replaced": list(f.replaced)} for f in fused],
    }
    info["unsupported_on_path"] = unsupported
    info["cam_candidates"] = cam
    return info


CHECKED = ("gradient", "guided_backprop", "lrp_epsilon_plus", "deeplift", "gradcam")  # one per rule family


def _sources(x) -> set:
    """Names of ``x`` and every tensor it is computed from (for an embedding: its token ids)."""
    seen, stack = set(), [x]
    while stack:
        t = stack.pop()
        if t.name in seen:
            continue
        seen.add(t.name)
        for node in t.inputs:
            stack.extend(node.inputs)
    return seen


def try_exports(proto, input, output, probabilities) -> dict:
    """Build the explanation graph of one method per rule family, as ``export`` would: method -> "ok" or
    the one-line reason it cannot be exported (a size known only at run time is reported as such)."""
    from onnxplain.errors import ShapeError
    from onnxplain.graph.rewrite import Options, build

    result = {}
    for m in CHECKED:
        try:
            build(proto, m, Options(input=input, output=output, probabilities=probabilities))
            result[m] = "ok"
        except ShapeError as exc:
            result[m] = f"needs --input-shape to export ({exc}); explain specialises by itself"
        except OnnxplainError as exc:
            result[m] = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: inspect describes
            result[m] = f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    return result


def cam_candidates(path) -> list[dict]:
    """Candidate CAM layers (up to 5, the default last): the one implementation lives in
    :func:`onnxplain.graph.taps.candidates`, which the CAM methods use, so inspect shows their choice."""
    from onnxplain.graph.taps import candidates

    return candidates(path)


# ---- text -------------------------------------------------------------------------------------------
def _marks() -> tuple[str, str]:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗".encode(enc)
        return "✓", "✗"
    except (UnicodeEncodeError, LookupError):
        return "yes", "no"


def fmt_shape(shape) -> str:
    if shape is None:
        return "[unknown]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_text(info: dict) -> str:
    yes, no = _marks()
    out = []
    prod = info["producer"]
    producer = " ".join(p for p in (prod["name"], prod["version"]) if p) or "unknown"
    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
    if info.get("model"):
        out.append(f"model     {Path(info['model']).name}")
    out.append(f"producer  {producer}   IR {info['ir_version']}   opset {opsets}")
    sub = f" (+{info['subgraph_nodes']} in subgraphs)" if info["subgraph_nodes"] else ""
    out.append(f"nodes     {info['nodes']}{sub} in {len(info['op_types'])} op types, {info['parameters']:,} parameters")
    for title, key in (("inputs", "inputs"), ("outputs", "outputs")):
        rows = info[key]
        w = max([len(r["name"]) for r in rows] or [0])
        for i, r in enumerate(rows):
            out.append(f"{title if i == 0 else '':<9} {r['name']:<{w}}  {r['dtype']:<8} {fmt_shape(r['shape'])}")
    ex = info["explained"]
    if "error" in ex:
        out.append(f"explained cannot explain this model as is: {ex['error']}")
    else:
        out.append(f"explained input '{ex['input']}' {fmt_shape(ex['input_shape'])} -> output '{ex['output']}'")
        if ex["stripped"]:
            out.append(
                f"          logits '{ex['logits']}' {fmt_shape(ex['logits_shape'])}: "
                f"{' + '.join(ex['stripped'])} stripped (use --probabilities to explain the output itself)"
            )
        else:
            out.append("          no Softmax/Sigmoid stripped: the output itself is explained")
        out.append(f"          {ex['path_nodes']} nodes on the explained path")
    fused = info.get("fused", {}).get("summary")
    if fused:
        out.append(
            "fused     "
            + ", ".join(f"{n} {p}" for p, n in fused.items())
            + " into single ops, so that they get their own rules"
        )
    if ex.get("task"):
        out.append(
            f"task      {ex['task']} (guessed from the outputs: {ex['task_reason']}; `explain --task` overrides)"
        )
    out.append("")
    ops = info["op_types"]
    w = max([len(r["op"]) for r in ops] + [7])
    out.append(f"  {'op type':<{w}}  count  on path  rule")
    for r in ops:
        flag = yes if r["rule"] else no
        if not r["rule"] and r["on_path"]:
            flag += "  <- unsupported on the explained path"
        out.append(f"  {r['op']:<{w}}  {r['count']:>5}  {r['on_path']:>7}  {flag}")
    out.append("")
    un = info["unsupported_on_path"]
    if "error" in ex:
        pass
    elif un:
        out.append(f"unsupported on the explained path: {len(un)} node(s)")
        for r in un:
            out.append(f"  {r['op']} '{r['name']}'")
    else:
        out.append("unsupported on the explained path: none")
    exports = info.get("exports") or {}
    if exports:
        ok, bad = [m for m, r in exports.items() if r == "ok"], {m: r for m, r in exports.items() if r != "ok"}
        yes, no = _marks()
        out.append("export check (one method per rule family, built as `export` builds it):")
        if ok:
            out.append(f"  {yes} {', '.join(ok)}")
        for m, r in bad.items():
            out.append(f"  {no} {m}: {r}")
    feeds = ex.get("needs_feeds") or []
    if feeds:
        out.append(f"other inputs to feed (feeds= / --feed NAME=...): {', '.join(feeds)}")
    cam = info["cam_candidates"]
    if cam:
        out.append("CAM candidate layers (last maps before the pooling/flatten/class-token head; * = default):")
        w = max(len(c["tensor"]) for c in cam)
        for c in cam:
            star = "*" if c["default"] else " "
            out.append(f"  {star} {c['tensor']:<{w}}  {fmt_shape(c['shape']):<22} from {c['producer']}")
    elif "error" not in ex:
        out.append(
            "CAM candidate layers: none (no 4-D map or token map feeds a pooling, flatten->dense or class-token head)"
        )
    return "\n".join(out)
