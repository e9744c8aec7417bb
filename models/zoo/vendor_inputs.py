"""Small vendor-style models for the zoo (onnx.helper/parser, numpy only): a token classifier with an
embedding, a detector head whose Resize size is computed from the input's shape, and a Swin-style block
whose pads are computed from the input's shape. Tested by tests/test_vendor_inputs.py.

    python models/zoo/vendor_inputs.py
"""

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper

ZOO = Path(__file__).resolve().parents[2] / "tests" / "zoo"

TOKENS = """
<ir_version: 8, opset_import: ["" : 17]>
tok (int64[N,6] ids) => (float[N,3] logits) {
    e = Gather (table, ids)
    zero = Constant <value = int64 {0}> ()
    keep = Greater (ids, zero)
    m = Cast <to = 1> (keep)
    ax = Constant <value = int64[1] {2}> ()
    m3 = Unsqueeze (m, ax)
    em = Mul (e, m3)
    pooled = ReduceMean <axes = [1], keepdims = 0> (em)
    logits = MatMul (pooled, W)
}
"""

# YOLO-style neck: upsample to twice the input's own size (sizes computed from Shape), per-anchor scores
DETECTOR = """
<ir_version: 8, opset_import: ["" : 17]>
dethead (float[N,2,H,W] x) => (float[N,6,A] y) {
    s = Shape (x)
    lo = Constant <value = int64[1] {0}> ()
    two = Constant <value = int64[1] {2}> ()
    hi = Constant <value = int64[1] {4}> ()
    nc = Slice (s, lo, two)
    hw = Slice (s, two, hi)
    hw2 = Mul (hw, two)
    sizes = Concat <axis = 0> (nc, hw2)
    r = Resize <mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"> (x, , , sizes)
    c = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (r, K)
    a = Sigmoid (c)
    n0 = Constant <value = int64[1] {0}> ()
    six = Constant <value = int64[1] {6}> ()
    m1 = Constant <value = int64[1] {-1}> ()
    shape = Concat <axis = 0> (n0, six, m1)
    y = Reshape (a, shape)
}
"""

# Swin-style window padding: pad H and W up to a multiple of 4, with the pads computed from the shape
SWIN_PAD = """
<ir_version: 8, opset_import: ["" : 17]>
swinpad (float[N,3,H,W] x) => (float[N,5] y) {
    s = Shape (x)
    two = Constant <value = int64[1] {2}> ()
    hi = Constant <value = int64[1] {4}> ()
    hw = Slice (s, two, hi)
    four = Constant <value = int64[1] {4}> ()
    rem = Mod (hw, four)
    short = Sub (four, rem)
    padhw = Mod (short, four)
    zeros = Constant <value = int64[6] {0, 0, 0, 0, 0, 0}> ()
    pads = Concat <axis = 0> (zeros, padhw)
    p = Pad <mode = "constant"> (x, pads)
    c = Conv <kernel_shape = [4, 4], strides = [4, 4]> (p, K)
    g = Tanh (c)
    q = GlobalAveragePool (g)
    f = Flatten (q)
    y = MatMul (f, V)
}
"""


def with_weights(text: str, **weights) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    for name, value in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    onnx.checker.check_model(m)
    return m


def main():
    rng = np.random.default_rng(0)
    models = {
        "token_classifier.onnx": with_weights(TOKENS, table=rng.normal(size=(10, 5)), W=rng.normal(size=(5, 3))),
        "detector_dynamic_resize.onnx": with_weights(DETECTOR, K=rng.normal(size=(6, 2, 3, 3)) * 0.5),
        "swin_computed_pads.onnx": with_weights(
            SWIN_PAD, K=rng.normal(size=(4, 3, 4, 4)) * 0.3, V=rng.normal(size=(4, 5))
        ),
    }
    for name, m in models.items():
        onnx.save(m, ZOO / name)
        print(f"wrote {ZOO / name} ({(ZOO / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
