"""No model in the zoo gets an all-zero gradient while its output depends on its input.

Every committed model (manifest or not: If/Loop, recurrent, quantised, fp16/bf16, exporter idioms) is
explained through the public API. The Explainer refuses an all-zero gradient whose score changes with
the input (the zero-attribution guard, checked by finite differences), so a model that returns here
has a map that is either non-zero or rightly zero; the assertion adds that it is non-zero for the
input used, which for every model here depends on the input.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxplain import Explainer

ZOO = Path(__file__).resolve().parent / "zoo"
MANIFEST = {e["file"]: e for e in json.loads((ZOO / "manifest.json").read_text())}
# models whose explained output does not depend on the input on some branch: probed where it does
PROBE = {"if_ignores_x.onnx": 1.0}  # mean(x) > 0 takes the branch that reads x
FEEDS = {"loop_dynamic.onnx": {"steps": np.array(3, np.int64)}}  # a fed trip count: the Loop unrolls
ORT_MAX_IR = 13  # onnxruntime 1.31 loads IR versions up to 13; test_zoo runs newer ones in onnx.reference


def _input(path: Path) -> np.ndarray:
    entry = MANIFEST.get(path.name)
    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    vi = next(v for v in m.graph.input if v.name not in inits)
    tt = vi.type.tensor_type
    if entry is not None:
        shape = entry["input_shape"]
    else:
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 2 for d in tt.shape.dim]
    rng = np.random.default_rng(0)
    if tt.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return rng.integers(1, 5, shape).astype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    x = rng.uniform(0.1, 1.0, shape) * np.where(rng.random(shape) < 0.5, -1, 1)
    return (np.abs(x) * PROBE[path.name] if path.name in PROBE else x).astype(np.float32)


@pytest.mark.parametrize("name", sorted(p.name for p in ZOO.glob("*.onnx")))
def test_gradient_is_not_silently_zero(name):
    path = ZOO / name
    if onnx.load(str(path), load_external_data=False).ir_version > ORT_MAX_IR:
        pytest.skip(f"IR version above {ORT_MAX_IR}: onnxruntime cannot run it (test_zoo checks it in onnx.reference)")
    x = _input(path)
    ex = Explainer(str(path), feeds=FEEDS.get(name))
    out = ex.canonical.output(None)
    rank = len(out.shape) if out.shape is not None else None
    if rank is None or rank < 2:  # no class axis: explain a seed of ones on the whole output
        y = ex.run(x, "gradient", target_weights=np.ones((len(x), *([1] * max((rank or 1) - 1, 0))), np.float32))
    else:
        y = ex.run(x, "gradient")
    assert np.isfinite(y.attribution).all()
    assert np.any(y.attribution != 0), name
