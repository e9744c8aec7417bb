"""Oracle tests for pooling VJPs (finite differences in float64) and MaxPool's tie convention.

onnx.reference gets MaxPool's Indices and several AveragePool geometries wrong, so the float64 runs
use MaxPoolByDefinition and AveragePoolByDefinition from oracle.py; ``test_oracle_pools_match_ort``
checks those against onnxruntime on every geometry used here.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from oracle import X, assert_case, case, gradient_graph, run_ref, to_float64

from onnxplain.runtime.session import make_session

r = np.random.default_rng(3)
n = r.normal


def im(*shape):
    return X(n(size=shape))


def unpool_indices(shape, k):
    """Flat indices (over N x C x spatial) of one position in each k-wide window of ``shape``, as a
    non-overlapping MaxPool's Indices output would give them."""
    spatial = shape[2:]
    out = [v // k for v in spatial]
    idx = np.zeros(shape[:2] + tuple(out), dtype=np.int64)
    for nc in np.ndindex(*shape[:2]):
        for o in np.ndindex(*out):
            pos = tuple(oi * k + int(r.integers(k)) for oi in o)
            idx[nc + o] = np.ravel_multi_index(nc + pos, shape)
    return idx


def declare_output(c, shape):
    """onnx infers no shape for an output sized by an input tensor; declare it."""
    c.model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", TensorProto.FLOAT, shape))
    return c


def with_indices(c):
    """The case's MaxPool with its (int64) Indices output too; the gradient is still of output 0."""
    c.model.graph.node[0].output.append("y1")
    inferred = onnx.shape_inference.infer_shapes(c.model, strict_mode=True)
    del c.model.graph.output[:]
    c.model.graph.output.extend(inferred.graph.output)
    return c


def then_sum_squares(c):
    """The case's pool followed by ReduceSumSquare to a scalar. Where onnx's shape inference keeps a
    ceil_mode window that onnxruntime drops, the pool's declared shape is wrong; the scalar output
    lets onnxruntime run the gradient graph all the same."""
    m = c.model
    m.graph.node[0].output[0] = "pooled"
    m.graph.node.append(helper.make_node("ReduceSumSquare", ["pooled"], ["y0"], keepdims=0))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("y0", TensorProto.FLOAT, []))
    c.model = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    c.id += "-then-sum-squares"
    return c


CASES = [
    # MaxPool: opset >= 16 scatters with ScatterElements(reduction=add), older opsets class by class
    case("MaxPool", im(2, 3, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], id="maxpool-3x3s2p1"),
    case(
        "MaxPool",
        im(2, 3, 7, 7),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        opset=13,
        id="maxpool-3x3s2p1-opset13",
    ),
    case("MaxPool", im(1, 2, 6, 6), kernel_shape=[3, 3], pads=[1, 1, 1, 1], opset=11, id="maxpool-3x3s1-opset11"),
    case("MaxPool", im(1, 2, 6, 6), kernel_shape=[3, 3], pads=[1, 1, 1, 1], opset=22, id="maxpool-3x3s1-opset22"),
    case("MaxPool", im(2, 3, 8, 8), kernel_shape=[2, 2], strides=[2, 2], opset=11, id="maxpool-2x2s2-opset11"),
    with_indices(
        case("MaxPool", im(2, 3, 8, 7), kernel_shape=[3, 3], strides=[2, 2], opset=12, id="maxpool-with-indices-output")
    ),
    with_indices(
        case(
            "MaxPool",
            im(1, 3, 6, 5),
            kernel_shape=[2, 3],
            strides=[1, 2],
            opset=17,
            storage_order=1,
            id="maxpool-indices-column-major",
        )
    ),
    case("MaxPool", im(2, 3, 9), kernel_shape=[3], strides=[2], pads=[1, 1], id="maxpool-1d"),
    case("MaxPool", im(2, 3, 9), kernel_shape=[3], pads=[0, 2], opset=11, id="maxpool-1d-opset11"),
    case("MaxPool", im(1, 2, 9, 9), kernel_shape=[3, 3], dilations=[2, 2], strides=[1, 2], id="maxpool-dilated"),
    case(
        "MaxPool",
        im(1, 2, 9, 8),
        kernel_shape=[3, 2],
        dilations=[2, 1],
        strides=[2, 2],
        opset=13,
        id="maxpool-dilated-opset13",
    ),
    case("MaxPool", im(1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, id="maxpool-ceil"),
    case(
        "MaxPool",
        im(1, 2, 8, 8),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 0, 1, 0],
        ceil_mode=1,
        opset=11,
        id="maxpool-ceil-asym-pads-opset11",
    ),
    # onnx's shape inference keeps a ceil window that starts in the end padding (onnxruntime drops it),
    # so the declared output shape is wrong: only the float64 graph is checked, unless a scalar follows
    case(
        "MaxPool",
        im(1, 2, 5, 5),
        kernel_shape=[2, 2],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        ort=False,
        id="maxpool-ceil-dropped-window",
    ),
    then_sum_squares(
        case(
            "MaxPool",
            im(1, 2, 6, 6),
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[2, 2, 2, 2],
            ceil_mode=1,
            opset=13,
            id="maxpool-ceil-dropped-window",
        )
    ),
    case(
        "MaxPool", im(1, 2, 7, 8), kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", id="maxpool-same-upper"
    ),
    case(
        "MaxPool",
        im(1, 2, 7, 8),
        kernel_shape=[2, 2],
        strides=[2, 2],
        auto_pad="SAME_LOWER",
        opset=11,
        id="maxpool-same-lower-opset11",
    ),
    case("MaxPool", im(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID", id="maxpool-valid"),
    case(
        "MaxPool",
        im(3, 2, 7, 7),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        opset=13,
        dims={"x0": ["N", 2, 7, 7]},
        id="maxpool-symbolic-batch-opset13",
    ),
    case(
        "MaxPool",
        im(3, 2, 7, 6),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        dims={"x0": ["N", 2, "H", "W"]},
        id="maxpool-symbolic-batch-and-spatial",
    ),
    # AveragePool: g / divisor map, then a ConvTranspose with an all-ones kernel
    case(
        "AveragePool",
        im(2, 3, 7, 7),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        opset=11,
        id="avgpool-exclude-pad-opset11",
    ),
    case(
        "AveragePool",
        im(2, 3, 7, 7),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
        opset=11,
        id="avgpool-include-pad-opset11",
    ),
    case(
        "AveragePool",
        im(1, 2, 8, 8),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        opset=19,
        id="avgpool-ceil-exclude-pad",
    ),
    case(
        "AveragePool",
        im(1, 2, 8, 8),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        count_include_pad=1,
        opset=22,
        id="avgpool-ceil-include-pad",
    ),
    case(
        "AveragePool",
        im(1, 2, 6, 6),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        count_include_pad=1,
        opset=11,
        id="avgpool-ceil-overhang-include-pad",
    ),
    case(
        "AveragePool",
        im(1, 2, 5, 5),
        kernel_shape=[2, 2],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        count_include_pad=1,
        ort=False,
        id="avgpool-ceil-dropped-window",
    ),
    case(
        "AveragePool",
        im(1, 2, 6, 6),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[2, 2, 2, 2],
        ceil_mode=1,
        ort=False,
        id="avgpool-ceil-dropped-window-exclude-pad",
    ),
    case(
        "AveragePool",
        im(1, 2, 8, 7),
        kernel_shape=[3, 2],
        strides=[1, 2],
        pads=[2, 0, 0, 1],
        opset=19,
        id="avgpool-asym-pads",
    ),
    case(
        "AveragePool",
        im(1, 2, 9, 9),
        kernel_shape=[2, 3],
        dilations=[2, 2],
        strides=[2, 1],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
        opset=19,
        id="avgpool-dilated",
    ),
    case(
        "AveragePool",
        im(1, 2, 7, 8),
        kernel_shape=[3, 3],
        strides=[2, 2],
        auto_pad="SAME_UPPER",
        id="avgpool-same-upper",
    ),
    case(
        "AveragePool",
        im(1, 2, 7, 8),
        kernel_shape=[3, 3],
        strides=[2, 2],
        auto_pad="SAME_LOWER",
        count_include_pad=1,
        id="avgpool-same-lower-include-pad",
    ),
    case(
        "AveragePool",
        im(1, 2, 8, 7),
        kernel_shape=[3, 3],
        strides=[2, 2],
        auto_pad="VALID",
        opset=11,
        id="avgpool-valid",
    ),
    case("AveragePool", im(2, 3, 11), kernel_shape=[4], strides=[3], pads=[2, 1], id="avgpool-1d"),
    case(
        "AveragePool",
        im(2, 3, 10),
        kernel_shape=[3],
        strides=[3],
        pads=[1, 0],
        ceil_mode=1,
        count_include_pad=1,
        opset=11,
        id="avgpool-1d-no-overlap-ceil",
    ),
    # windows that do not overlap (kernel <= stride)
    case("AveragePool", im(2, 3, 8, 8), kernel_shape=[2, 2], strides=[2, 2], id="avgpool-2x2s2-no-overlap"),
    case(
        "AveragePool",
        im(1, 2, 9, 8),
        kernel_shape=[2, 2],
        strides=[3, 2],
        pads=[1, 0, 0, 0],
        opset=11,
        id="avgpool-no-overlap-gaps-and-leftover",
    ),
    case(
        "AveragePool",
        im(1, 2, 6, 6),
        kernel_shape=[2, 2],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        count_include_pad=1,
        id="avgpool-no-overlap-ceil-include-pad",
    ),
    case(
        "AveragePool",
        im(3, 2, 7, 7),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        dims={"x0": ["N", 2, 7, 7]},
        id="avgpool-symbolic-batch",
    ),
    case(
        "AveragePool",
        im(3, 2, 8, 8),
        kernel_shape=[2, 2],
        strides=[2, 2],
        opset=13,
        dims={"x0": ["N", 2, 8, 8]},
        id="avgpool-no-overlap-symbolic-batch",
    ),
    case("LpPool", im(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], opset=11, id="lppool-p2"),
    case("LpPool", im(2, 2, 9), kernel_shape=[3], strides=[1], p=3, opset=18, id="lppool-p3-1d"),
    case("LpPool", im(1, 2, 6, 6), kernel_shape=[2, 2], strides=[2, 2], p=1, opset=22, id="lppool-p1-no-overlap"),
    # onnxruntime scales a ceil_mode window cut by the end of the pads by (taps kept / kernel size); the
    # spec's LpPool is the plain norm of the window, so only the float64 graph is checked
    case(
        "LpPool",
        im(1, 2, 6, 6),
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        opset=18,
        ort=False,
        id="lppool-ceil",
    ),
    case(
        "MaxUnpool",
        im(2, 3, 3, 4),
        unpool_indices((2, 3, 6, 8), 2),
        kernel_shape=[2, 2],
        strides=[2, 2],
        opset=11,
        id="maxunpool-opset11",
    ),
    declare_output(
        case(
            "MaxUnpool",
            im(2, 3, 3, 3),
            unpool_indices((2, 3, 7, 7), 2),
            np.array([2, 3, 7, 7]),
            kernel_shape=[2, 2],
            strides=[2, 2],
            opset=22,
            id="maxunpool-output-shape-opset22",
        ),
        [2, 3, 7, 7],
    ),
    case(
        "MaxUnpool",
        im(3, 2, 4),
        unpool_indices((3, 2, 8), 2),
        kernel_shape=[2],
        strides=[2],
        opset=11,
        dims={"x0": ["N", 2, 4]},
        id="maxunpool-1d-symbolic-batch",
    ),
    case("GlobalAveragePool", im(2, 3, 4, 5), opset=11, id="gap-opset11"),
    case("GlobalAveragePool", im(2, 3, 7), opset=22, id="gap-1d-opset22"),
    case("GlobalAveragePool", im(3, 2, 4, 5), dims={"x0": ["N", 2, "H", "W"]}, id="gap-symbolic"),
    case("GlobalMaxPool", im(2, 3, 4, 5), opset=11, id="gmp-opset11"),
    case("GlobalMaxPool", im(2, 3, 7), opset=22, id="gmp-1d-opset22"),
    case("GlobalMaxPool", im(3, 2, 4, 5), dims={"x0": ["N", 2, "H", "W"]}, id="gmp-symbolic"),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


@pytest.mark.parametrize(
    "c", [c for c in CASES if c.op in ("MaxPool", "AveragePool", "LpPool", "MaxUnpool") and c.ort], ids=repr
)
def test_oracle_pools_match_ort(c):
    """The float64 oracle ops compute what onnxruntime computes (indices included)."""
    got = make_session(c.model).run(None, c.feeds)
    ref = run_ref(to_float64(c.model), {k: v.astype(np.float64) for k, v in c.feeds.items()})
    for a, (name, b) in zip(got, ref.items()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{c.id} {name}")


def pool_windows_1d(size, k, s, pb):
    out = (size + 2 * pb - k) // s + 1
    return [[t for t in range(o * s - pb, o * s - pb + k) if 0 <= t < size] for o in range(out)]


def first_max_grad(x, w, k, s, p):
    """PyTorch's max_pool2d backward: each window's cotangent goes to its first maximum."""
    gx = np.zeros_like(x)
    rows, cols = pool_windows_1d(x.shape[2], k, s, p), pool_windows_1d(x.shape[3], k, s, p)
    for i, rr in enumerate(rows):
        for j, cc in enumerate(cols):
            taps = [(a, c) for a in rr for c in cc]  # raster order
            for nn in range(x.shape[0]):
                for ch in range(x.shape[1]):
                    vals = [x[nn, ch, a, c] for a, c in taps]
                    a, c = taps[int(np.argmax(vals))]
                    gx[nn, ch, a, c] += w[nn, ch, i, j]
    return gx


def run_both(model, x, w):
    """The exported gradient in onnxruntime (float32) and in onnx.reference (float64)."""
    g32 = make_session(gradient_graph(model, "x0", "y0")).run(
        ["attribution"], {"x0": x.astype(np.float32), "target_weights": w.astype(np.float32)}
    )[0]
    m64 = to_float64(model)
    g64 = run_ref(gradient_graph(m64, "x0", "y0"), {"x0": x.astype(np.float64), "target_weights": w})["attribution"]
    return g32, g64


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_maxpool_ties_go_to_first_max(opset):
    """Tied maxima (all-zero windows after a ReLU, plateaus, repeated values): the first in raster
    order gets the whole cotangent; overlapping windows sharing a maximum add up."""
    x = np.zeros((1, 2, 7, 7))
    x[0, 0, 2:5, 2:5] = 1.0  # a plateau seen by several overlapping windows
    x[0, 1] = np.round(r.uniform(0, 2, size=(7, 7)))  # many ties among {0, 1, 2}
    c = case("MaxPool", X(x), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], opset=opset)
    w = r.normal(size=(1, 2, 4, 4))
    want = first_max_grad(x, w, 3, 2, 1)
    g32, g64 = run_both(c.model, x, w)
    np.testing.assert_allclose(g64, want, atol=1e-12)
    np.testing.assert_allclose(g32, want, atol=1e-5)


@pytest.mark.parametrize("opset", [11, 17])
def test_global_maxpool_ties_go_to_first_max(opset):
    x = np.array([[[[0.0, 2.0], [2.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    c = case("GlobalMaxPool", X(x), opset=opset)
    w = np.array([[[[1.5]], [[-2.0]]]])
    want = np.zeros_like(x)
    want[0, 0, 0, 1], want[0, 1, 0, 0] = 1.5, -2.0
    g32, g64 = run_both(c.model, x, w)
    np.testing.assert_allclose(g64, want, atol=1e-12)
    np.testing.assert_allclose(g32, want, atol=1e-6)


def test_lppool_zero_window_passes_nothing():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, :2] = [[1.0, -2.0], [0.5, 0.0]]
    c = case("LpPool", X(x), kernel_shape=[2, 2], strides=[2, 2], opset=11)
    w = np.ones((1, 1, 2, 2))
    g32, g64 = run_both(c.model, x, w)
    want = np.zeros_like(x)
    want[0, 0, :2, :2] = x[0, 0, :2, :2] / np.sqrt(1 + 4 + 0.25)
    np.testing.assert_allclose(g64, want, atol=1e-12)
    np.testing.assert_allclose(g32, want, atol=1e-6)
