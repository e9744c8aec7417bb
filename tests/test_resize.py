"""Oracle tests for the Resize VJP, and a check of its interpolation matrices against onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from oracle import X, assert_case, case, check_vjp, gradient_graph

from onnxplain.errors import OnnxplainError
from onnxplain.rules.vjp.resize import interpolation_matrix

r = np.random.default_rng(3)
n = r.normal
F = np.float32
NO_ROI = np.array([], F)


def f32(*v):
    return np.array(v, F)


def i64(*v):
    return np.array(v, np.int64)


CASES = [
    # opset 11: X, roi, scales, sizes
    case(
        "Resize",
        X(n(size=(1, 2, 3, 4))),
        NO_ROI,
        f32(1, 1, 2, 2),
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
        opset=11,
        id="nearest-x2-pool-opset11",
    ),
    case(
        "Resize",
        X(n(size=(1, 2, 3, 4))),
        NO_ROI,
        f32(1, 1, 3, 2),
        mode="nearest",
        opset=11,
        id="nearest-half-pixel-x3x2-pool",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 4, 4))),
        NO_ROI,
        f32(1, 1, 1.5, 1.75),
        mode="nearest",
        nearest_mode="round_prefer_ceil",
        opset=11,
        id="nearest-round-prefer-ceil-fractional",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 5, 4))),
        NO_ROI,
        f32(),
        i64(1, 1, 3, 7),
        mode="nearest",
        nearest_mode="ceil",
        coordinate_transformation_mode="align_corners",
        opset=11,
        id="nearest-ceil-align-corners-sizes",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 3, 4))),
        NO_ROI,
        f32(1, 1, 2, 2),
        mode="nearest",
        coordinate_transformation_mode="tf_half_pixel_for_nn",
        opset=11,
        id="nearest-tf-half-pixel-opset11",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 3, 4))),
        None,
        f32(1, 1, 2, 0.5),
        mode="nearest",
        nearest_mode="floor",
        coordinate_transformation_mode="tf_half_pixel_for_nn",
        opset=13,
        id="nearest-tf-half-pixel-floor-opset13",
    ),
    case(
        "Resize", X(n(size=(1, 2, 3, 4))), NO_ROI, f32(1, 1, 2, 2), mode="linear", opset=11, id="bilinear-half-pixel-x2"
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 3, 4))),
        NO_ROI,
        f32(),
        i64(1, 1, 5, 7),
        mode="linear",
        coordinate_transformation_mode="align_corners",
        opset=11,
        id="bilinear-align-corners-sizes",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 6, 5))),
        None,
        None,
        i64(1, 1, 3, 1),
        mode="linear",
        coordinate_transformation_mode="pytorch_half_pixel",
        opset=13,
        id="bilinear-pytorch-half-pixel-down",
    ),
    case(
        "Resize",
        X(n(size=(2, 2, 5))),
        None,
        f32(1, 1, 2),
        mode="linear",
        coordinate_transformation_mode="asymmetric",
        opset=13,
        id="linear-1d-asymmetric",
    ),
    case("Resize", X(n(size=(1, 1, 2, 3, 2))), None, f32(1, 1, 2, 1.5, 2), mode="linear", opset=13, id="trilinear-5d"),
    case("Resize", X(n(size=(1, 1, 4, 4))), NO_ROI, f32(1, 1, 2, 2), mode="cubic", opset=11, id="bicubic-x2"),
    case(
        "Resize",
        X(n(size=(1, 1, 5, 4))),
        None,
        f32(1, 1, 0.6, 1.5),
        mode="cubic",
        cubic_coeff_a=-0.5,
        exclude_outside=1,
        opset=13,
        id="bicubic-exclude-outside",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 4, 5))),
        f32(0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2),
        f32(),
        i64(1, 1, 3, 6),
        mode="linear",
        coordinate_transformation_mode="tf_crop_and_resize",
        extrapolation_value=0.5,
        opset=11,
        id="linear-tf-crop-and-resize",
    ),
    case(
        "Resize",
        X(n(size=(2, 2, 3, 4))),
        None,
        f32(1, 1, 2, 2),
        mode="linear",
        opset=13,
        dims={"x0": ["N", 2, 3, 4]},
        id="bilinear-dynamic-batch",
    ),
    case(
        "Resize",
        X(n(size=(2, 2, 3, 4))),
        None,
        f32(1, 1, 2, 2),
        mode="nearest",
        opset=13,
        dims={"x0": ["N", "C", 3, 4]},
        id="nearest-pool-dynamic-batch-channels",
    ),
    # opset 18: axes, keep_aspect_ratio_policy, antialias; opset 19: half_pixel_symmetric
    case(
        "Resize",
        X(n(size=(2, 2, 3, 4))),
        None,
        None,
        i64(6, 5),
        axes=[2, 3],
        mode="linear",
        opset=18,
        dims={"x0": ["N", 2, 3, 4]},
        id="bilinear-axes-sizes-dynamic-batch-opset18",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 3, 4))),
        None,
        None,
        i64(9, 9),
        axes=[2, 3],
        mode="nearest",
        keep_aspect_ratio_policy="not_larger",
        opset=18,
        id="nearest-not-larger-opset18",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 3, 4))),
        None,
        f32(2, 2),
        axes=[2, 3],
        mode="linear",
        antialias=1,
        opset=18,
        id="bilinear-antialias-upscale-opset18",
    ),
    case(
        "Resize",
        X(n(size=(1, 1, 4, 5))),
        None,
        f32(1, 1, 1.7, 0.7),
        mode="linear",
        coordinate_transformation_mode="half_pixel_symmetric",
        opset=19,
        id="bilinear-half-pixel-symmetric-opset19",
    ),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


# ---- the interpolation matrices agree with onnxruntime's own Resize ---------------------------
def _ort_matrix(n_in, n_out, scale, by_sizes, **attrs):
    """A from onnxruntime: resize eye(n_in) laid out as [n_in, 1, 1, n_in] along the last axis."""
    if by_sizes:
        ins, inits = ["x", "", "", "sizes"], [onnx.numpy_helper.from_array(i64(n_in, 1, 1, n_out), "sizes")]
    else:
        ins, inits = ["x", "", "scales"], [onnx.numpy_helper.from_array(f32(1, 1, 1, scale), "scales")]
    node = helper.make_node("Resize", ins, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.eye(n_in, dtype=F).reshape(n_in, 1, 1, n_in)})[0]
    return y.reshape(n_in, -1).T


SIZES = [(4, 8, None), (3, 7, None), (5, 3, None), (6, 1, None), (4, 10, 2.5), (5, 4, 0.8), (3, 9, 3.0), (4, 6, 1.5)]
COMBOS = [
    ("nearest", m, nm)
    for m in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
    for nm in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
]
COMBOS += [
    (mode, m, "round_prefer_floor")
    for mode in ("linear", "cubic")
    for m in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
]


@pytest.mark.parametrize("mode,coord,nearest", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_interpolation_matrix_matches_onnxruntime(mode, coord, nearest):
    for n_in, n_out, scale in SIZES:
        by_sizes = scale is None
        s = n_out / n_in if by_sizes else float(F(scale))
        attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest)
        want = _ort_matrix(n_in, n_out, scale, by_sizes, **attrs)
        got = interpolation_matrix(n_in, n_out, s, **attrs)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{n_in}->{n_out} scale {scale}")


# ---- models where the sizes are computed from Shape at run time -------------------------------
def _model(nodes, inits, x_dims, opset):
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def _runtime_sizes_model(x_dims, opset=11):
    """y = Resize(x, sizes = concat(shape(x)[:2], [6, 8])), as torch exports F.interpolate(size=...)."""
    inits = {"roi": NO_ROI, "scales": f32(), "zero": i64(0), "two": i64(2), "hw": i64(6, 8)}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "roi", "scales", "sizes"], ["y"], mode="linear"),
    ]
    return _model(nodes, inits, x_dims, opset)


def test_runtime_sizes_dynamic_batch():
    model = _runtime_sizes_model(["N", 2, 3, 4])
    res = check_vjp(model, {"x": n(size=(2, 2, 3, 4)).astype(F)}, "x")
    assert res.error < 1e-6 and res.error_f32 < 1e-4


def test_dynamic_spatial_size_is_refused():
    with pytest.raises(OnnxplainError, match="Resize .*static"):
        gradient_graph(_runtime_sizes_model(["N", 2, "H", "W"]), "x", "y")
    c = case("Resize", X(n(size=(1, 1, 3, 4))), None, f32(1, 1, 2, 2), opset=13, dims={"x0": [1, 1, "H", "W"]})
    with pytest.raises(OnnxplainError, match="Resize .*axis 2"):
        gradient_graph(c.model, "x0", "y0")


def test_antialiased_downscale_is_refused():
    c = case("Resize", X(n(size=(1, 1, 4, 4))), None, f32(0.5, 0.5), axes=[2, 3], mode="linear", antialias=1, opset=18)
    with pytest.raises(OnnxplainError, match="antialias"):
        gradient_graph(c.model, "x0", "y0")


def test_integer_nearest_upsampling_is_sum_pooling():
    """The U-Net case: 2x nearest upsampling is transposed by a Reshape + ReduceSum, no MatMul."""
    c = case("Resize", X(n(size=(1, 2, 3, 4))), None, f32(1, 1, 2, 2), opset=13, dims={"x0": ["N", 2, 3, 4]})
    ops = [node.op_type for node in gradient_graph(c.model, "x0", "y0").graph.node]
    assert "ReduceSum" in ops and "MatMul" not in ops and "Transpose" not in ops
