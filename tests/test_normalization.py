"""Oracle tests for normalisation VJPs (finite differences in float64).

Instance, layer and group normalisation (and BatchNormalization in training mode) use the input's
own statistics, so their cotangents flow through the mean and variance; scale and bias inputs are
tried both as constants and as differentiable inputs.
"""

import numpy as np
import pytest
from oracle import X, assert_case, case

r = np.random.default_rng(5)
n = r.normal


def pos(*shape):
    return r.uniform(0.5, 1.5, size=shape)


def shaped_like_input(c):
    """onnx infers no output shape for GroupNormalization (a function op); declare the input's."""
    c.model.graph.output[0].type.tensor_type.shape.CopyFrom(c.model.graph.input[0].type.tensor_type.shape)
    return c


C = 3
bn_params = (n(size=C), n(size=C), n(size=C), pos(C))  # scale, B, mean, var

CASES = [
    case("BatchNormalization", X(n(size=(2, C, 4, 4))), *bn_params, opset=11, id="bn-opset11"),
    case("BatchNormalization", X(n(size=(2, C, 4, 4))), *bn_params, epsilon=1e-3, opset=14, id="bn-opset14"),
    case("BatchNormalization", X(n(size=(2, C, 5))), *bn_params, training_mode=0, opset=15, id="bn-1d-opset15"),
    case("BatchNormalization", X(n(size=(4, C))), *bn_params, opset=15, id="bn-rank2"),
    case(
        "BatchNormalization",
        X(n(size=(3, C, 4, 4))),
        *bn_params,
        opset=15,
        dims={"x0": ["N", C, 4, 4]},
        id="bn-symbolic-batch",
    ),
    case(
        "BatchNormalization",
        X(n(size=(2, C, 3, 3))),
        X(n(size=C)),
        X(n(size=C)),
        X(n(size=C)),
        X(pos(C)),
        opset=15,
        id="bn-all-inputs-differentiable",
    ),
    case(
        "BatchNormalization",
        X(n(size=(4, C, 3, 3))),
        X(n(size=C)),
        X(n(size=C)),
        n(size=C),
        pos(C),
        training_mode=1,
        outputs=3,
        opset=15,
        id="bn-training-mode",
    ),
    case("LayerNormalization", X(n(size=(2, 5, 6))), n(size=6), n(size=6), opset=17, id="ln-last-axis"),
    case(
        "LayerNormalization",
        X(n(size=(2, 3, 4, 4))),
        n(size=(3, 4, 4)),
        n(size=(3, 4, 4)),
        axis=1,
        epsilon=1e-3,
        opset=17,
        id="ln-axis1-several-dims",
    ),
    case("LayerNormalization", X(n(size=(2, 3, 4, 5))), n(size=(4, 5)), axis=-2, opset=17, id="ln-axis-neg2-no-bias"),
    case(
        "LayerNormalization",
        X(n(size=(2, 4, 6))),
        X(n(size=6)),
        X(n(size=6)),
        opset=17,
        id="ln-scale-bias-differentiable",
    ),
    case("LayerNormalization", X(n(size=(2, 4, 6))), X(n(size=(1, 6))), opset=22, id="ln-broadcast-scale-opset22"),
    case(
        "LayerNormalization",
        X(n(size=(3, 5, 6))),
        n(size=6),
        n(size=6),
        opset=17,
        dims={"x0": ["N", "T", 6]},
        id="ln-symbolic-batch-and-length",
    ),
    case(
        "LayerNormalization",
        X(n(size=(2, 4, 6))),
        n(size=6),
        n(size=6),
        outputs=3,
        output=1,
        opset=17,
        id="ln-mean-output",
    ),
    case(
        "LayerNormalization",
        X(n(size=(2, 4, 6))),
        n(size=6),
        n(size=6),
        outputs=3,
        output=2,
        opset=17,
        id="ln-invstddev-output",
    ),
    case("InstanceNormalization", X(n(size=(2, C, 4, 5))), n(size=C), n(size=C), opset=11, id="in-opset11"),
    case(
        "InstanceNormalization", X(n(size=(2, C, 7))), n(size=C), n(size=C), epsilon=1e-3, opset=22, id="in-1d-opset22"
    ),
    case(
        "InstanceNormalization", X(n(size=(2, C, 3, 4))), X(n(size=C)), X(n(size=C)), id="in-scale-bias-differentiable"
    ),
    case(
        "InstanceNormalization",
        X(n(size=(3, C, 4, 4))),
        n(size=C),
        n(size=C),
        dims={"x0": ["N", C, "H", "W"]},
        id="in-symbolic",
    ),
    # GroupNormalization-18 (per-group scale and bias) is deprecated: onnx's checker rejects it
    shaped_like_input(
        case(
            "GroupNormalization",
            X(n(size=(2, 6, 5))),
            n(size=6),
            n(size=6),
            num_groups=2,
            epsilon=1e-3,
            opset=21,
            id="gn-opset21",
        )
    ),
    shaped_like_input(
        case(
            "GroupNormalization",
            X(n(size=(3, 6, 3, 3))),
            X(n(size=6)),
            X(n(size=6)),
            num_groups=3,
            opset=21,
            dims={"x0": ["N", 6, 3, 3]},
            id="gn-symbolic-differentiable-params",
        )
    ),
    case("MeanVarianceNormalization", X(n(size=(2, C, 3, 4))), opset=11, id="mvn-default-axes"),
    case("MeanVarianceNormalization", X(n(size=(2, C, 4))), axes=[2], opset=13, id="mvn-axes"),
    case("LRN", X(n(size=(2, 5, 3, 3))), size=3, opset=11, id="lrn-size3"),
    # onnxruntime accepts odd sizes only
    case(
        "LRN", X(n(size=(2, 6, 3, 3))), size=4, alpha=0.5, beta=0.6, bias=2.0, opset=13, ort=False, id="lrn-size4-attrs"
    ),
    case(
        "LRN",
        X(n(size=(3, 5, 2, 3))),
        size=5,
        alpha=0.3,
        dims={"x0": ["N", 5, 2, 3]},
        opset=13,
        id="lrn-symbolic-batch",
    ),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)
