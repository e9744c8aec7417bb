"""Shared helpers for the zoo scripts: paths, checking, float64 timing, manifest.

Only numpy and onnx are needed here, so handwritten.py can run without torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
ZOO_DIR = ROOT / "tests" / "zoo"
MANIFEST = ZOO_DIR / "manifest.json"

MAX_BYTES = 1_000_000
MAX_PARAMS = 200_000


def save_checked(model: onnx.ModelProto, name: str) -> Path:
    """Inline local functions, run the full checker and save as one self-contained file."""
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            raise ValueError(f"{name}: initializer {init.name} still uses external data")
    onnx.checker.check_model(model, full_check=True)
    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    path = ZOO_DIR / name
    onnx.save_model(model, str(path), save_as_external_data=False)
    size = path.stat().st_size
    if size >= MAX_BYTES:
        raise ValueError(f"{name}: file is {size} bytes (limit {MAX_BYTES})")
    n_params = count_params(model)
    if n_params >= MAX_PARAMS:
        raise ValueError(f"{name}: {n_params} parameters (limit {MAX_PARAMS})")
    return path


def count_params(model: onnx.ModelProto) -> int:
    """Number of float elements in initializers and Constant nodes."""
    total = 0
    for init in model.graph.initializer:
        if init.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE):
            total += int(np.prod(init.dims))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for att in node.attribute:
                if att.type == onnx.AttributeProto.TENSOR and att.t.data_type == TensorProto.FLOAT:
                    total += int(np.prod(att.t.dims))
    return total


# ---------------------------------------------------------------------------
# float64 conversion (only used here to time the reference evaluator; the test
# suite has its own converter)

_F32, _F64 = TensorProto.FLOAT, TensorProto.DOUBLE


def _tensor_to_f64(t: TensorProto) -> TensorProto:
    if t.data_type != _F32:
        return t
    arr = numpy_helper.to_array(t).astype(np.float64)
    return numpy_helper.from_array(arr, t.name)


def _value_info_to_f64(vi: onnx.ValueInfoProto) -> None:
    tt = vi.type.tensor_type
    if tt.elem_type == _F32:
        tt.elem_type = _F64


def _graph_to_f64(graph: onnx.GraphProto) -> None:
    # Resize/Upsample scales are float32 by definition and must stay so.
    keep = {n.input[2] for n in graph.node if n.op_type == "Resize" and len(n.input) > 2}
    keep |= {n.input[1] for n in graph.node if n.op_type == "Upsample" and len(n.input) > 1}
    for i, init in enumerate(graph.initializer):
        if init.name not in keep:
            graph.initializer[i].CopyFrom(_tensor_to_f64(init))
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        _value_info_to_f64(vi)
    for node in graph.node:
        for att in node.attribute:
            if att.type == onnx.AttributeProto.TENSOR:
                if not (node.op_type == "Constant" and node.output[0] in keep):
                    att.t.CopyFrom(_tensor_to_f64(att.t))
            elif att.type == onnx.AttributeProto.GRAPH:
                _graph_to_f64(att.g)
            elif att.name in ("to", "dtype") and att.type == onnx.AttributeProto.INT and att.i == _F32:
                att.i = _F64


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _graph_to_f64(m.graph)
    return m


def time_reference_f64(model: onnx.ModelProto, input_shape, repeats: int = 3) -> float:
    """Best-of-`repeats` seconds of one float64 forward pass in ReferenceEvaluator."""
    from onnx.reference import ReferenceEvaluator

    m64 = to_float64(model)
    sess = ReferenceEvaluator(m64)
    name = m64.graph.input[0].name
    x = np.random.default_rng(0).standard_normal(input_shape)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = sess.run(None, {name: x})
        best = min(best, time.perf_counter() - t0)
    for o in out:
        if o.dtype.kind == "f" and not np.all(np.isfinite(o)):
            raise ValueError("float64 reference output is not finite")
    return best


# ---------------------------------------------------------------------------
# manifest


def update_manifest(entries: list[dict], sources: set[str]) -> None:
    """Replace all manifest entries whose source is in `sources` by `entries`."""
    old = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
    kept = [e for e in old if e["source"] not in sources]
    merged = sorted(kept + entries, key=lambda e: e["file"])
    lines = ",\n".join("  " + json.dumps(e) for e in merged)
    MANIFEST.write_text("[\n" + lines + "\n]\n")


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("model has no default-domain opset")


__all__ = [
    "ZOO_DIR",
    "save_checked",
    "count_params",
    "to_float64",
    "time_reference_f64",
    "update_manifest",
    "opset_of",
    "helper",
]
