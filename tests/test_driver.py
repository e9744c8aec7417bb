"""The black-box driver: batched scores equal single runs; fixed-batch-1 models made batchable."""

import numpy as np
import onnx
from onnx import numpy_helper

from models import tiny_cnn
from onnxplain.runtime.driver import Driver
from onnxplain.runtime.session import make_session


def _singles(model, xs, name="logits"):
    sess = make_session(model)
    return np.stack([sess.run([name], {"x": x[None]})[0][0] for x in xs])


def _fixed_reshape_model():
    """tiny_cnn with a hard-coded Reshape to [1, 256]: not batchable."""
    m = tiny_cnn(batch=1, softmax=False)
    for init in m.graph.initializer:
        if init.name == "shape":
            init.CopyFrom(numpy_helper.from_array(np.array([1, 256], dtype=np.int64), "shape"))
    return m


def test_scores_equal_single_runs_dynamic_and_fixed():
    xs = np.random.default_rng(0).normal(size=(7, 3, 8, 8)).astype(np.float32)
    for batch in ("N", 1):
        model = tiny_cnn(batch=batch)
        ref = _singles(tiny_cnn(batch=batch, softmax=False), xs)
        d = Driver(model)
        for bs in (None, 3, 1):
            np.testing.assert_array_equal(d.scores(xs, 2, batch_size=bs), ref[:, 2].astype(np.float64))
        t = np.arange(7) % 5
        np.testing.assert_array_equal(d.scores(xs, t), ref[np.arange(7), t])
        np.testing.assert_array_equal(d.scores(xs, -1), ref.max(1))
        if batch == 1:
            assert d.batched, "the fixed-batch-1 model should have been made batchable"


def test_probabilities_and_unbatchable_fixed_model():
    xs = np.random.default_rng(1).normal(size=(5, 3, 8, 8)).astype(np.float32)
    probs = _singles(tiny_cnn(), xs, "prob")
    np.testing.assert_array_equal(Driver(tiny_cnn(), probabilities=True).scores(xs, 1), probs[:, 1])
    model = _fixed_reshape_model()
    onnx.checker.check_model(model)
    d = Driver(model)
    calls = []
    got = d.scores(xs, 3, progress=lambda i, n: calls.append((i, n)))
    assert d.batched is False
    np.testing.assert_array_equal(got, _singles(model, xs)[:, 3])
    assert calls[-1] == (5, 5) and len(calls) == 5
