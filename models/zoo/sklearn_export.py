"""Train small sklearn classifiers on synthetic data and convert them with skl2onnx.

Output (zipmap disabled, so probabilities are a plain float tensor):
    tests/zoo/sklearn_mlp.onnx     MLPClassifier (tanh), 3 classes

LogisticRegression is left out on purpose: skl2onnx turns it into the
ai.onnx.ml LinearClassifier/Normalizer ops, which have no float path to explain.

    python models/zoo/sklearn_export.py      (dev-only: needs scikit-learn, skl2onnx)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import opset_of, save_checked, update_manifest  # noqa: E402

N_FEATURES = 8
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def main() -> None:
    warnings.filterwarnings("ignore")
    X, y = make_classification(n_samples=300, n_features=N_FEATURES, n_informative=5, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    classifiers = {
        "sklearn_mlp.onnx": MLPClassifier(hidden_layer_sizes=(16,), activation="tanh", max_iter=500, random_state=0),
    }
    entries = []
    for fname, clf in classifiers.items():
        clf.fit(X, y)
        onx = to_onnx(
            clf,
            initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
            options={"zipmap": False},
            target_opset=TARGET_OPSET,
        )
        onx.producer_name = "onnxplain-zoo/skl2onnx"
        path = save_checked(onx, fname)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"input": X[:20]}))}
        assert set(outs) == {"label", "probabilities"}, set(outs)
        np.testing.assert_allclose(outs["probabilities"], clf.predict_proba(X[:20]), atol=1e-4)
        np.testing.assert_array_equal(outs["label"], clf.predict(X[:20]))
        print(f"{fname:28s} {path.stat().st_size:8d} B  train acc={clf.score(X, y):.2f}")
        entries.append(
            {
                "file": fname,
                "family": "sklearn_" + fname.split("_")[1].removesuffix(".onnx"),
                "source": "skl2onnx",
                "opset": opset_of(onx),
                "input": "input",
                "input_shape": [2, N_FEATURES],
                "dynamic_batch": True,
                "output": "probabilities",
                "logits_note": "class probabilities [N,3] (softmax); 'label' is an int64 output",
            }
        )
    update_manifest(entries, {"skl2onnx"})


if __name__ == "__main__":
    main()
