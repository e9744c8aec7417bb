"""Whole-model gradients on the test zoo against float64 finite differences.

Each zoo model (torch-script and dynamo exports at opsets 11-23, handwritten graphs up to the
newest opset, an skl2onnx MLP) is converted to float64; its exported gradient graph, run by the
reference evaluator, must match central differences to 1e-4 relative L2; the float32 graph must
pass the full checker and, where onnxruntime supports the opset, agree with float64 in it.
"""

import json
import pathlib

import numpy as np
import onnx
import pytest
from oracle import check_vjp, gradient_graph

from onnxplain.graph.load import load_model, opset_of

ZOO = pathlib.Path(__file__).parent / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
ORT_MAX_OPSET = 25  # onnxruntime 1.31 loads opsets up to 25 (checked when the zoo was made)


def test_zoo_covers_the_families():
    families = {e["family"] for e in MANIFEST}
    for fam in ("plain_cnn", "resnet", "mobilenetv2", "efficientnet", "densenet", "convnext", "vit", "handwritten"):
        assert fam in families
    assert {e["source"] for e in MANIFEST} >= {"torch-script", "torch-dynamo", "handwritten", "skl2onnx"}
    assert len({e["opset"] for e in MANIFEST}) >= 4 and len(MANIFEST) >= 12


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_zoo_gradient_matches_finite_differences(entry):
    model = load_model(ZOO / entry["file"])
    rng = np.random.default_rng(7)
    x = rng.normal(size=entry["input_shape"]).astype(np.float32)
    ort_ok = opset_of(model) <= ORT_MAX_OPSET
    res = check_vjp(model, {entry["input"]: x}, entry["input"], entry["output"], directions=6, h=1e-7, ort=ort_ok)
    assert res.error <= 1e-4, f"finite-difference relative error {res.error:.2e}"
    if ort_ok:
        assert res.error_f32 <= 1e-4, f"float32 onnxruntime vs float64: {res.error_f32:.2e}"
    m32 = gradient_graph(model, entry["input"], entry["output"])
    onnx.checker.check_model(m32, full_check=True)
    assert np.abs(res.grad).max() > 0
