"""Safe loading and atomic saving: bad files give one-line errors; external data stays inside."""

import os

import numpy as np
import onnx
import pytest

from models import tiny_cnn
from onnxplain import Explainer, OnnxplainError, load_model, save_model_atomic


def test_missing_file(tmp_path):
    with pytest.raises(OnnxplainError, match="no such file"):
        load_model(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(os.urandom(300))
    with pytest.raises(OnnxplainError, match="not a valid ONNX model"):
        load_model(p)


def test_unsupported_opset(tmp_path):
    m = tiny_cnn(opset=10)
    with pytest.raises(OnnxplainError, match="opset 10 is not supported"):
        load_model(m)


def _external(tmp_path, m):
    path = tmp_path / "m.onnx"
    m = onnx.ModelProto.FromString(m.SerializeToString())  # onnx.save_model converts it in place
    onnx.save_model(
        m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.weights", size_threshold=0
    )
    return path


def test_external_data_loads_and_explains(tmp_path):
    m = tiny_cnn()
    path = _external(tmp_path, m)
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    a = Explainer(path).explain(x)
    b = Explainer(m).explain(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_cannot_escape(tmp_path, location):
    path = _external(tmp_path, tiny_cnn())
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    inner = tmp_path / "inner"
    inner.mkdir()
    bad = inner / "bad.onnx"
    onnx.save_model(m, str(bad))
    with pytest.raises(OnnxplainError, match="outside the model's folder|not a relative path"):
        load_model(bad)


def test_external_data_missing_file(tmp_path):
    path = _external(tmp_path, tiny_cnn())
    (tmp_path / "m.weights").unlink()
    with pytest.raises(OnnxplainError, match="does not exist"):
        load_model(path)


def test_save_atomic_and_external(tmp_path):
    m = tiny_cnn()
    out = save_model_atomic(m, tmp_path / "a.onnx")
    assert onnx.load(str(out)).SerializeToString() == m.SerializeToString()
    big = save_model_atomic(m, tmp_path / "b.onnx", external_threshold=100)
    assert (tmp_path / "b.onnx.data").is_file()
    back = load_model(big)
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(back.graph.initializer[0]), onnx.numpy_helper.to_array(m.graph.initializer[0])
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "b.onnx.data"]


def test_input_model_file_untouched(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(tiny_cnn(), str(path))
    before = path.read_bytes()
    Explainer(path).explain(np.ones((1, 3, 8, 8), np.float32), method="integrated_gradients", steps=4)
    assert path.read_bytes() == before


def test_in_memory_model_with_external_refs(tmp_path):
    path = _external(tmp_path, tiny_cnn())
    with pytest.raises(OnnxplainError, match="external data"):
        load_model(onnx.load(str(path), load_external_data=False))
