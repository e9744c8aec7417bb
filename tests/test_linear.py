"""Oracle tests for Conv, ConvTranspose, Gemm and MatMul VJPs (finite differences in float64)."""

import numpy as np
import pytest
from oracle import X, assert_case, case

r = np.random.default_rng(1)
n = r.normal

CASES = [
    case("Conv", X(n(size=(2, 3, 7, 7))), n(size=(4, 3, 3, 3)), n(size=4), pads=[1, 1, 1, 1], id="conv-pad1"),
    case(
        "Conv",
        X(n(size=(1, 4, 9, 8))),
        n(size=(6, 2, 3, 2)),
        group=2,
        strides=[2, 1],
        pads=[1, 0, 0, 1],
        id="conv-groups-stride",
    ),
    case("Conv", X(n(size=(1, 4, 8, 8))), n(size=(4, 1, 3, 3)), group=4, pads=[1, 1, 1, 1], id="conv-depthwise"),
    case(
        "Conv",
        X(n(size=(1, 4, 9, 9))),
        n(size=(4, 1, 3, 3)),
        group=4,
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        id="conv-depthwise-stride2",
    ),
    case(
        "Conv", X(n(size=(1, 2, 10, 9))), n(size=(3, 2, 3, 3)), dilations=[2, 2], pads=[2, 1, 2, 1], id="conv-dilated"
    ),
    case(
        "Conv",
        X(n(size=(1, 2, 9, 9))),
        n(size=(3, 2, 3, 3)),
        strides=[2, 2],
        auto_pad="SAME_UPPER",
        id="conv-same-upper",
    ),
    case(
        "Conv",
        X(n(size=(1, 2, 8, 8))),
        n(size=(3, 2, 4, 4)),
        strides=[3, 3],
        auto_pad="SAME_LOWER",
        id="conv-same-lower",
    ),
    case("Conv", X(n(size=(1, 2, 7, 7))), n(size=(3, 2, 3, 3)), auto_pad="VALID", id="conv-valid"),
    case("Conv", X(n(size=(2, 3, 11))), n(size=(2, 3, 4)), strides=[2], pads=[1, 2], id="conv-1d"),
    case("Conv", X(n(size=(1, 2, 6, 6))), n(size=(3, 2, 3, 3)), pads=[1, 1, 1, 1], opset=11, id="conv-opset11"),
    case(
        "ConvTranspose",
        X(n(size=(1, 4, 5, 5))),
        n(size=(4, 3, 3, 3)),
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 1],
        id="convT-stride2",
    ),
    case("ConvTranspose", X(n(size=(1, 4, 4, 4))), n(size=(4, 1, 3, 3)), group=2, dilations=[2, 1], id="convT-groups"),
    case(
        "ConvTranspose",
        X(n(size=(1, 2, 4, 4))),
        n(size=(2, 3, 3, 3)),
        strides=[2, 2],
        output_shape=[8, 8],
        id="convT-output-shape",
    ),
    case("Gemm", X(n(size=(3, 5))), n(size=(5, 4)), n(size=(4,)), id="gemm"),
    case(
        "Gemm",
        X(n(size=(5, 3))),
        X(n(size=(4, 5))),
        X(n(size=(1, 4))),
        transA=1,
        transB=1,
        alpha=0.7,
        beta=1.3,
        id="gemm-transposed-all-inputs",
    ),
    case("Gemm", X(n(size=(3, 5))), n(size=(4, 5)), transB=1, opset=11, id="gemm-opset11-nobias"),
    case("MatMul", X(n(size=(2, 1, 4, 5))), X(n(size=(3, 5, 6))), id="matmul-broadcast"),
    case("MatMul", X(n(size=(5,))), X(n(size=(2, 5, 3))), id="matmul-1d-left"),
    case("MatMul", X(n(size=(2, 3, 5))), X(n(size=(5,))), id="matmul-1d-right"),
    case("MatMul", X(n(size=(5,))), X(n(size=(5,))), id="matmul-1d-both"),
    case("MatMul", X(n(size=(4, 6))), n(size=(6, 2)), opset=11, id="matmul-opset11"),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)
