"""Oracle tests for the data-movement VJPs (finite differences in float64, float32 in onnxruntime)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from oracle import X, assert_case, case, check_vjp

r = np.random.default_rng(2)
n = r.normal
I64 = np.int64
BIG, SMALL = np.iinfo(I64).max, np.iinfo(I64).min


def ints(*v):
    return np.array(v, dtype=I64)


RESHAPES = [
    case("Reshape", X(n(size=(2, 3, 4))), ints(0, -1), id="reshape-0-minus1"),
    case("Reshape", X(n(size=(2, 3, 4))), ints(4, -1, 2), opset=11, id="reshape-opset11"),
    case("Reshape", X(n(size=(2, 3, 4))), ints(6, 4), allowzero=1, opset=14, id="reshape-allowzero"),
    case("Reshape", X(n(size=(2, 3, 4))), ints(0, 2, -1), dims={"x0": ["N", 3, 4]}, id="reshape-dynamic-batch"),
    case("Flatten", X(n(size=(2, 3, 4))), axis=0, id="flatten-axis0"),
    case("Flatten", X(n(size=(2, 3, 4))), axis=2, opset=11, id="flatten-axis2-opset11"),
    case("Flatten", X(n(size=(2, 3, 4))), axis=-1, id="flatten-negative-axis"),
    case("Flatten", X(n(size=(2, 3, 4))), dims={"x0": ["N", 3, 4]}, id="flatten-dynamic-batch"),
    case("Transpose", X(n(size=(2, 3, 4, 5))), perm=[0, 2, 3, 1], id="transpose-perm"),
    case("Transpose", X(n(size=(2, 3, 4))), id="transpose-default-reverses"),
    case("Transpose", X(n(size=(2, 3, 4))), perm=[2, 0, 1], dims={"x0": ["N", 3, 4]}, id="transpose-dynamic-batch"),
    case("Squeeze", X(n(size=(2, 1, 3, 1))), axes=[1, -1], opset=11, id="squeeze-attr-opset11"),
    case("Squeeze", X(n(size=(2, 1, 3, 1))), ints(-3), opset=13, id="squeeze-input-opset13"),
    case("Squeeze", X(n(size=(1, 3, 1))), opset=13, id="squeeze-all"),
    case("Squeeze", X(n(size=(2, 1, 3))), ints(1), opset=13, dims={"x0": ["N", 1, 3]}, id="squeeze-dynamic-batch"),
    case("Unsqueeze", X(n(size=(2, 3))), axes=[0, -1], opset=11, id="unsqueeze-attr-opset11"),
    case("Unsqueeze", X(n(size=(2, 3))), ints(1, -1), opset=13, id="unsqueeze-input-opset13"),
    case("Unsqueeze", X(n(size=(2, 3))), ints(-1), opset=18, dims={"x0": ["N", 3]}, id="unsqueeze-dynamic-batch"),
    case("DepthToSpace", X(n(size=(2, 8, 2, 3))), blocksize=2, id="d2s-dcr"),
    case("DepthToSpace", X(n(size=(2, 8, 2, 3))), blocksize=2, mode="CRD", id="d2s-crd"),
    case("DepthToSpace", X(n(size=(1, 9, 2, 2))), blocksize=3, mode="CRD", opset=11, id="d2s-crd-opset11"),
    case(
        "DepthToSpace",
        X(n(size=(2, 8, 2, 3))),
        blocksize=2,
        mode="CRD",
        dims={"x0": ["N", 8, "H", "W"]},
        id="d2s-crd-dynamic",
    ),
    case("SpaceToDepth", X(n(size=(2, 2, 4, 6))), blocksize=2, id="s2d"),
    case(
        "SpaceToDepth",
        X(n(size=(2, 2, 4, 6))),
        blocksize=2,
        opset=11,
        dims={"x0": ["N", 2, 4, 6]},
        id="s2d-dynamic-batch-opset11",
    ),
]

CONCATS = [
    case("Concat", X(n(size=(2, 3))), X(n(size=(2, 4))), axis=1, id="concat-axis1"),
    case(
        "Concat",
        X(n(size=(2, 3, 1))),
        n(size=(2, 3, 2)),
        X(n(size=(2, 3, 3))),
        axis=-1,
        opset=11,
        id="concat-negative-axis-const-middle",
    ),
    case(
        "Concat",
        X(n(size=(2, 3))),
        X(n(size=(3, 3))),
        axis=0,
        dims={"x0": ["N", 3], "x1": ["M", 3]},
        id="concat-dynamic-along-axis",
    ),
    case(
        "Concat",
        X(n(size=(2, 1, 4))),
        X(n(size=(2, 5, 4))),
        axis=1,
        dims={"x0": ["N", 1, 4], "x1": ["N", 5, 4]},
        id="concat-cls-token-dynamic-batch",
    ),
    case("Split", X(n(size=(2, 5))), axis=1, split=[2, 3], outputs=2, opset=11, id="split-attr-opset11"),
    case("Split", X(n(size=(2, 5))), ints(1, 4), axis=-1, outputs=2, output=1, opset=13, id="split-input-opset13"),
    case("Split", X(n(size=(7, 2))), num_outputs=3, outputs=3, output=2, opset=18, id="split-num-outputs-opset18"),
    case(
        "Split",
        X(n(size=(2, 6))),
        axis=1,
        outputs=3,
        output=1,
        opset=13,
        dims={"x0": ["N", 6]},
        id="split-equal-dynamic-batch",
    ),
]

SLICES = [
    case("Slice", X(n(size=(4, 6))), ints(1, -4), ints(3, 1000), ints(0, 1), id="slice-clamped-end"),
    case("Slice", X(n(size=(4, 6))), ints(-1), ints(SMALL), ints(1), ints(-1), id="slice-reverse"),
    case("Slice", X(n(size=(5, 7))), ints(4, -2), ints(-10, 0), ints(0, -1), ints(-2, -3), id="slice-negative-steps"),
    case("Slice", X(n(size=(3, 7, 8))), ints(1, 0), ints(BIG, BIG), ints(1, 2), ints(2, 3), id="slice-strided"),
    case("Slice", X(n(size=(4, 6))), ints(1), ints(-1), opset=11, id="slice-opset11-default-axes"),
    case(
        "Slice",
        X(n(size=(2, 4, 6))),
        ints(1, 5),
        ints(3, 0),
        ints(-2, 2),
        ints(1, -2),
        opset=13,
        dims={"x0": ["N", 4, 6]},
        id="slice-dynamic-batch",
    ),
    case("Slice", X(n(size=(3, 4))), ints(1), ints(BIG), ints(0), dims={"x0": ["N", 4]}, id="slice-along-dynamic-axis"),
    case(
        "Slice",
        X(n(size=(5, 4))),
        ints(-1),
        ints(0),
        ints(0),
        ints(-2),
        dims={"x0": ["N", 4]},
        id="slice-strided-along-dynamic-axis",
    ),
]

GATHERS = [
    case("Gather", X(n(size=(4, 3))), ints(2, 0), id="gather-axis0"),
    case("Gather", X(n(size=(2, 5, 3))), ints(0, -1, 3), axis=1, opset=11, id="gather-unique-opset11"),
    case("Gather", X(n(size=(2, 5, 3))), np.array([[0, -1], [1, 4]], I64), axis=1, id="gather-repeats-opset17"),
    case(
        "Gather",
        X(n(size=(2, 5, 3))),
        np.array([[0, -1], [1, 4]], I64),
        axis=1,
        opset=13,
        id="gather-repeats-opset13-onehot",
    ),
    case(
        "Gather",
        X(n(size=(2, 5, 3))),
        np.array(0, I64),
        axis=1,
        dims={"x0": ["N", 5, 3]},
        id="gather-class-token-dynamic-batch",
    ),
    case("Gather", X(n(size=(2, 5, 3))), np.array(-2, I64), axis=-1, opset=11, id="gather-scalar-negative"),
    case(
        "Gather",
        X(n(size=(3, 5, 2))),
        ints(1, 1, 0),
        axis=1,
        opset=16,
        dims={"x0": ["N", 5, 2]},
        id="gather-repeats-dynamic-batch",
    ),
    case(
        "Gather",
        X(n(size=(3, 5))),
        ints(2, 0, 2),
        axis=0,
        opset=13,
        dims={"x0": ["N", 5]},
        id="gather-along-dynamic-axis",
    ),
    case(
        "GatherElements",
        X(n(size=(3, 4))),
        np.array([[0, 2], [1, 1], [3, -1]], I64),
        axis=1,
        opset=11,
        id="gatherelements-repeats-opset11",
    ),
    case(
        "GatherElements",
        X(n(size=(3, 4))),
        np.array([[0, 2, 1, 2], [2, 0, 0, -1]], I64),
        axis=0,
        opset=16,
        id="gatherelements-repeats-opset16",
    ),
    case(
        "GatherElements",
        X(n(size=(3, 4))),
        np.array([[0, 2], [1, 3], [3, -2]], I64),
        axis=1,
        opset=13,
        id="gatherelements-unique-opset13",
    ),
    case(
        "GatherElements",
        X(n(size=(2, 3))),
        np.array([[0, 2, 1], [-1, 1, 1]], I64),
        axis=-1,
        opset=13,
        id="gatherelements-negative-axis-onehot",
    ),
]

PADS = [
    case("Pad", X(n(size=(2, 3, 4))), ints(0, 1, 2, 0, 2, 1), opset=11, id="pad-constant-opset11"),
    case(
        "Pad", X(n(size=(2, 3, 4))), ints(0, 0, 2, 0, 1, 0), X(np.float32(0.7)), opset=13, id="pad-constant-value-input"
    ),
    case("Pad", X(n(size=(2, 3, 4))), ints(1, 2, 0, 3), None, ints(-1, 1), opset=18, id="pad-axes-opset18"),
    case("Pad", X(n(size=(2, 3, 4))), ints(0, 2, 1, 0, 1, 3), mode="reflect", opset=11, id="pad-reflect"),
    case(
        "Pad",
        X(n(size=(1, 2, 3, 4))),
        ints(0, 0, 2, 3, 0, 0, 2, 3),
        mode="reflect",
        opset=13,
        dims={"x0": ["N", 2, "H", "W"]},
        id="pad-reflect-dynamic-spatial",
    ),
    case("Pad", X(n(size=(2, 3, 4))), ints(0, 2, 1, 0, 1, 3), mode="edge", id="pad-edge"),
    case(
        "Pad",
        X(n(size=(2, 1, 3))),
        ints(2, 1, 2, 1),
        None,
        ints(1, 2),
        mode="edge",
        opset=18,
        dims={"x0": ["N", 1, 3]},
        id="pad-edge-size1-dynamic-batch",
    ),
    case("Pad", X(n(size=(2, 3, 4))), ints(0, 3, 1, 0, 1, 4), mode="wrap", opset=19, id="pad-wrap"),
    case("Expand", X(n(size=(3, 1))), ints(2, 3, 4), id="expand"),
    case("Expand", X(n(size=(2, 1, 4))), ints(1, 3, 1), opset=11, dims={"x0": ["N", 1, 4]}, id="expand-dynamic-batch"),
    case("Tile", X(n(size=(2, 3, 1))), ints(2, 1, 3), id="tile"),
    case("Tile", X(n(size=(2, 3))), ints(1, 3), opset=11, dims={"x0": ["N", 3]}, id="tile-dynamic-batch"),
]

CASES = RESHAPES + CONCATS + SLICES + GATHERS + PADS


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


def _dynamic_model(nodes, inits, x_dims, opset=17):
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def test_slice_bounds_computed_at_run_time():
    """y = x[:, 1 : len - 1]: ends come from Shape(x) at run time (the rule slices Range(0, d))."""
    inits = [
        onnx.numpy_helper.from_array(v, k)
        for k, v in {"one": ints(1), "two": ints(2), "m1": ints(-1), "ax": ints(1)}.items()
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "one", "two"], ["len"]),
        helper.make_node("Add", ["len", "m1"], ["end"]),
        helper.make_node("Slice", ["x", "one", "end", "ax"], ["y"]),
    ]
    model = _dynamic_model(nodes, inits, ["N", "T"])
    res = check_vjp(model, {"x": n(size=(2, 6)).astype(np.float32)}, "x")
    assert res.error < 1e-6 and res.error_f32 < 1e-4


@pytest.mark.parametrize("opset", [13, 17])
def test_gather_runtime_indices(opset):
    """Indices computed in the graph (here from Shape): ScatterND with add from 16, one-hot MatMul before."""
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in {"k": ints(-1, -4, 0), "first": ints(0)}.items()]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "first"], ["i"]),
        helper.make_node("Sub", ["i", "i"], ["z"]),
        helper.make_node("Add", ["z", "k"], ["idx"]),  # [-1, -4, 0], unknown until run time
        helper.make_node("Gather", ["x", "idx"], ["y"], axis=1),
    ]
    model = _dynamic_model(nodes, inits, ["N", "T"], opset=opset)
    res = check_vjp(model, {"x": n(size=(2, 4)).astype(np.float32)}, "x")
    assert res.error < 1e-6 and res.error_f32 < 1e-4


def test_static_slice_indices_match_onnxruntime():
    """The numpy reading of Slice's clamping (used for static shapes) against onnxruntime's Slice."""
    import itertools

    import onnxruntime as ort

    from onnxplain.rules.vjp.shape import slice_indices

    node = helper.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"])
    ins = [helper.make_tensor_value_info(k, TensorProto.INT64, [1]) for k in "sep"]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["d"])] + ins,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(ints(0), "a")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    bounds = [-12, -6, -5, -1, 0, 1, 4, 5, 12, BIG, SMALL]
    for d, s, e, p in itertools.product((1, 5), bounds, bounds, (1, -1, 2, -3)):
        y = sess.run(None, {"x": np.arange(d, dtype=np.float32), "s": ints(s), "e": ints(e), "p": ints(p)})[0]
        assert y.astype(I64).tolist() == slice_indices(d, s, e, p).tolist(), (d, s, e, p)
