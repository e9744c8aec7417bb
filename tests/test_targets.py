"""Targets beyond classes: detections (with and without NMS in the graph), regions, sequences.

Known answers: hand-written heads whose score for box i reads a known image region get their
attribution inside that region; an NMS graph's selected detection maps back to its candidate
exactly (read independently from the reference evaluator); CTC and region targets match float64
finite differences of the forward model (tests/oracle.py).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from oracle import run_ref, to_float64

from onnxplain import targets as tg
from onnxplain.errors import OnnxplainError
from onnxplain.runtime.explainer import Explainer

S = 8  # image side
G = 4  # anchors per side: anchor a = (gy, gx) reads the 2x2 block of pixels [2gy:2gy+2, 2gx:2gx+2]
A, C = G * G, 2


def _model(nodes, inputs, outputs, inits, opset=17):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def block_weights(seed=0):
    """W [S*S, A*C]: the score of (anchor a, class c) is a weighted sum of anchor a's 2x2 block only."""
    r = np.random.default_rng(seed)
    w = np.zeros((S * S, A * C), np.float32)
    for a in range(A):
        gy, gx = divmod(a, G)
        for c in range(C):
            blk = np.zeros((S, S), np.float32)
            blk[2 * gy : 2 * gy + 2, 2 * gx : 2 * gx + 2] = r.uniform(0.5, 1.5, (2, 2))
            w[:, a * C + c] = blk.ravel()
    return w


def anchor_boxes():
    """The anchors' boxes, cx cy w h (pixels): each anchor's own 2x2 block."""
    a = np.arange(A)
    gy, gx = a // G, a % G
    return np.stack([2 * gx + 1.0, 2 * gy + 1.0, np.full(A, 2.0), np.full(A, 2.0)]).astype(np.float32)  # [4, A]


def yolo_head(objectness=False):
    """x [N, 1, 8, 8] -> [N, 4 + C, A] (YOLOv8 layout) or [N, A, 5 + C] (YOLOv5, with an objectness
    that reads the same block); class scores = Sigmoid(block sums)."""
    w = block_weights()
    nodes = [
        h.make_node("Flatten", ["x"], ["f"], axis=1),
        h.make_node("MatMul", ["f", "W"], ["m"]),
        h.make_node("Reshape", ["m", "shp"], ["acl"]),  # [N, A, C]
        h.make_node("Sigmoid", ["acl"], ["ac"]),
    ]
    inits = [
        nh.from_array(w, "W"),
        nh.from_array(np.array([-1, A, C], np.int64), "shp"),
        nh.from_array(anchor_boxes().T[None], "boxes"),
    ]  # [1, A, 4]
    nodes.append(h.make_node("Shape", ["x"], ["xs"]))
    nodes.append(h.make_node("Slice", ["xs", "z0", "z1"], ["n"]))
    nodes.append(h.make_node("Concat", ["n", "a4"], ["bshape"], axis=0))
    nodes.append(h.make_node("Expand", ["boxes", "bshape"], ["bx"]))
    inits += [
        nh.from_array(np.array([0], np.int64), "z0"),
        nh.from_array(np.array([1], np.int64), "z1"),
        nh.from_array(np.array([A, 4], np.int64), "a4"),
    ]
    if objectness:
        wo = block_weights(seed=1)[:, ::C].copy()  # [S*S, A]
        nodes += [
            h.make_node("MatMul", ["f", "Wo"], ["ol"]),
            h.make_node("Sigmoid", ["ol"], ["o"]),
            h.make_node("Unsqueeze", ["o", "ax2"], ["o3"]),
            h.make_node("Concat", ["bx", "o3", "ac"], ["det"], axis=2),
        ]  # [N, A, 5 + C]
        inits += [nh.from_array(wo, "Wo"), nh.from_array(np.array([2], np.int64), "ax2")]
        out = h.make_tensor_value_info("det", T.FLOAT, ["N", A, 5 + C])
    else:
        nodes += [
            h.make_node("Concat", ["bx", "ac"], ["cat"], axis=2),
            h.make_node("Transpose", ["cat"], ["det"], perm=[0, 2, 1]),
        ]  # [N, 4 + C, A]
        out = h.make_tensor_value_info("det", T.FLOAT, ["N", 4 + C, A])
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, S, S])], [out], inits)


def block_mask(a):
    m = np.zeros((S, S), bool)
    gy, gx = divmod(a, G)
    m[2 * gy : 2 * gy + 2, 2 * gx : 2 * gx + 2] = True
    return m


def xyxy(a):
    gy, gx = divmod(a, G)
    return (2 * gx, 2 * gy, 2 * gx + 2, 2 * gy + 2)


X = np.random.default_rng(3).uniform(0.1, 1.0, (1, 1, S, S)).astype(np.float32)


# ---- detection without NMS -------------------------------------------------------------------------
@pytest.mark.parametrize("a", [0, 6, 13])
def test_detection_box_gradient_stays_in_its_block(a):
    ex = Explainer(yolo_head())
    res = ex.run(X, "gradient", target=tg.Detection(box=xyxy(a), cls=1, layout="yolov8"))
    g = res.attribution[0, 0]
    inside = block_mask(a)
    assert np.abs(g[inside]).min() > 0
    assert np.all(g[~inside] == 0)
    # the explained scalar is the class score sigmoid(x . w): its gradient is sigmoid' times W's column
    col = block_weights()[:, a * C + 1].astype(np.float64)
    p = 1 / (1 + np.exp(-X.ravel().astype(np.float64) @ col))
    np.testing.assert_allclose(g.ravel(), p * (1 - p) * col, rtol=1e-5)


def test_detection_resolves_the_best_iou_candidate_and_reports_it():
    ex = Explainer(yolo_head())
    box = (4.4, 2.2, 6.4, 4.0)  # mostly anchor 6's block [4:6, 2:4]
    t = ex.target(X, tg.Detection(box=box))
    assert t.items[0]["candidate"] == 6 and t.weights.shape == (1, 4 + C, A)
    assert np.count_nonzero(t.weights) == 1
    assert "best IoU" in t.notes[0]


def test_detection_top_by_default_on_a_detector_and_class_given():
    ex = Explainer(yolo_head())
    ex.task = "detect"
    y = ex.run(X, "gradient").outputs["det"][0]  # [4 + C, A]
    t = ex.target(X)
    a, c = np.unravel_index(np.argmax(y[4:].T), (A, C))
    assert (t.items[0]["candidate"], t.items[0]["class"]) == (a, c)
    t1 = ex.target(X, 0)  # a plain class under task=detect: the best detection of that class
    assert t1.items[0]["class"] == 0 and t1.items[0]["candidate"] == int(np.argmax(y[4]))


def test_yolov5_objectness_seed_is_the_product_rule():
    ex = Explainer(yolo_head(objectness=True))
    t = ex.target(X, tg.Detection(box=xyxy(9), cls=0, layout="yolov5"))
    out = ex.run(X, "gradient", target=t).outputs["det"][0]  # [A, 5 + C]
    obj, cls = out[9, 4], out[9, 5]
    w = t.weights[0]
    assert w[9, 4] == pytest.approx(cls) and w[9, 5] == pytest.approx(obj)
    assert np.count_nonzero(w) == 2


def test_detection_coordinate_seeds_one_box_number():
    ex = Explainer(yolo_head())
    t = ex.target(X, tg.Detection(box=xyxy(5), coordinate=2))
    assert t.weights[0, 2, 5] == 1 and np.count_nonzero(t.weights) == 1
    # boxes are constants here: the coordinate does not depend on the input
    with pytest.raises(OnnxplainError, match="zero"):
        _check_nonzero(ex.run(X, "gradient", target=t).attribution)


def _check_nonzero(a):
    if not np.any(a):
        raise OnnxplainError("all-zero map")


@pytest.mark.parametrize("method", ["occlusion", "rise"])
def test_black_box_methods_take_detection_targets(method):
    ex = Explainer(yolo_head())
    a = 10
    opts = {"window": 2} if method == "occlusion" else {"n_masks": 400, "cells": 4}
    res = ex.run(X, method, target=tg.Detection(box=xyxy(a), cls=0), **opts)
    m = res.attribution[0, 0]
    inside = block_mask(a)
    if method == "occlusion":  # hiding pixels outside the block leaves the score unchanged
        assert np.all(m[~inside] == 0) and np.all(m[inside] > 0)
    else:
        assert m[inside].mean() > m[~inside].mean() + 2 * m[~inside].std()


def test_d_rise_weights_masks_by_detection_similarity():
    ex = Explainer(yolo_head())
    a = 5
    m = ex.run(X, "d_rise", target=tg.Detection(box=xyxy(a), cls=1), n_masks=600, cells=4).attribution[0, 0]
    inside = block_mask(a)
    assert m[inside].mean() > m[~inside].mean() + 2 * m[~inside].std()
    t = ex.target(X, tg.Detection(box=xyxy(a), cls=1))
    from onnxplain.methods.drise import similarity

    same = tg.Candidates(np.array([xyxy(a)], float), t.items[0]["scores"][None], np.ones(1))
    assert similarity(t.items[0]["box"], t.items[0]["scores"], same) == pytest.approx(1.0)  # itself: IoU 1, cos 1
    conf = t.items[0]["scores"].max()
    assert similarity(t.items[0]["box"], t.items[0]["scores"], same, objectness=False) == pytest.approx(conf)
    shifted = tg.Candidates(
        np.array([[xyxy(a)[0] + 1, xyxy(a)[1], xyxy(a)[2] + 1, xyxy(a)[3]]], float),
        t.items[0]["scores"][None],
        np.full(1, 0.5),
    )
    assert similarity(t.items[0]["box"], t.items[0]["scores"], shifted) == pytest.approx(0.5 / 3)  # IoU 1/3 x O


def test_separate_outputs_ssd_layout_switches_the_explained_tensor():
    """SSD style: boxes [N, A, 4] first, scores [N, A, C] second; the default explained output is the
    boxes, the detection explains the scores tensor."""
    w = block_weights()
    nodes = [
        h.make_node("Flatten", ["x"], ["f"], axis=1),
        h.make_node("MatMul", ["f", "W"], ["m"]),
        h.make_node("Reshape", ["m", "shp"], ["scores"]),
        h.make_node("Mul", ["f", "zero"], ["fz"]),
        h.make_node("ReduceSum", ["fz"], ["z"], keepdims=1),
        h.make_node("Add", ["bxc", "z"], ["bz"]),
        h.make_node("Unsqueeze", ["bz", "ax0"], ["boxes"]),
    ]
    bx = np.stack([anchor_boxes()[0] - 1, anchor_boxes()[1] - 1, anchor_boxes()[0] + 1, anchor_boxes()[1] + 1], 1)
    inits = [
        nh.from_array(w, "W"),
        nh.from_array(np.array([-1, A, C], np.int64), "shp"),
        nh.from_array(np.zeros(1, np.float32), "zero"),
        nh.from_array(bx.astype(np.float32), "bxc"),
        nh.from_array(np.array([0], np.int64), "ax0"),
    ]
    m = _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [1, 1, S, S])],
        [h.make_tensor_value_info("boxes", T.FLOAT, [1, A, 4]), h.make_tensor_value_info("scores", T.FLOAT, [1, A, C])],
        inits,
    )
    ex = Explainer(m)
    assert tg.guess_task(ex.canonical.graph)[0] == "detect"
    lay = tg.Layout(anchor_axis=1, classes=0, format="xyxy", separate=True)
    g = ex.run(X, "gradient", target=tg.Detection(box=xyxy(3), cls=1, layout=lay)).attribution[0, 0]
    np.testing.assert_allclose(g.ravel(), w[:, 3 * C + 1], rtol=1e-6)  # scores are linear here


# ---- detection with NMS in the graph ---------------------------------------------------------------
def nms_model():
    """scores [1, C, A] = Sigmoid(block sums), overlapping boxes; NonMaxSuppression -> selected_indices;
    outputs the selected scores (GatherND) and the indices."""
    w = block_weights()
    r = np.random.default_rng(5)
    cxcywh = anchor_boxes().T.copy()
    cxcywh[:, 2:] = r.uniform(2.0, 5.0, (A, 2))  # wider boxes: neighbours overlap and get suppressed
    yxyx = np.stack(
        [
            cxcywh[:, 1] - cxcywh[:, 3] / 2,
            cxcywh[:, 0] - cxcywh[:, 2] / 2,
            cxcywh[:, 1] + cxcywh[:, 3] / 2,
            cxcywh[:, 0] + cxcywh[:, 2] / 2,
        ],
        1,
    )[None].astype(np.float32)
    nodes = [
        h.make_node("Flatten", ["x"], ["f"], axis=1),
        h.make_node("MatMul", ["f", "W"], ["m"]),
        h.make_node("Reshape", ["m", "shp"], ["acl"]),
        h.make_node("Transpose", ["acl"], ["cal"], perm=[0, 2, 1]),
        h.make_node("Sigmoid", ["cal"], ["scores"]),
        h.make_node("NonMaxSuppression", ["nms_boxes", "scores", "maxk", "iou", "thr"], ["selected"], name="nms"),
        h.make_node("GatherND", ["scores", "selected"], ["det_scores"]),
    ]
    inits = [
        nh.from_array(w, "W"),
        nh.from_array(np.array([-1, A, C], np.int64), "shp"),
        nh.from_array(yxyx, "nms_boxes"),
        nh.from_array(np.array([5], np.int64), "maxk"),
        nh.from_array(np.array([0.3], np.float32), "iou"),
        nh.from_array(np.array([0.0], np.float32), "thr"),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [1, 1, S, S])],
        [
            h.make_tensor_value_info("det_scores", T.FLOAT, ["K"]),
            h.make_tensor_value_info("selected", T.INT64, ["K", 3]),
        ],
        inits,
    ), w


def test_nms_selected_detection_maps_back_to_its_candidate_exactly():
    m, w = nms_model()
    sel = run_ref(m, {"x": X})["selected"]  # the reference evaluator, not onnxplain
    assert len(sel) >= 3
    ex = Explainer(m)
    assert tg.guess_task(ex.canonical.graph)[0] == "detect"
    for k in range(len(sel)):
        _, c, a = sel[k]
        t = ex.target(X, tg.Detection(selected=k))
        assert t.weights.shape == (1, C, A) and t.weights[0, c, a] == 1 and np.count_nonzero(t.weights) == 1
        g = ex.run(X, "gradient", target=t).attribution[0, 0]
        np.testing.assert_allclose(g.ravel(), w[:, a * C + c], rtol=1e-6)  # d logit / dx: W's column
    # default: the selected detection with the highest score
    scores = run_ref(m, {"x": X})["det_scores"]
    t = ex.target(X)
    k = int(np.argmax(scores))
    assert (t.items[0]["candidate"], t.items[0]["class"]) == (int(sel[k, 2]), int(sel[k, 1]))


def test_nms_selected_out_of_range_is_one_line():
    m, _ = nms_model()
    with pytest.raises(OnnxplainError, match="out of range"):
        Explainer(m).target(X, tg.Detection(selected=99))


# ---- regions and sequences: float64 finite differences -----------------------------------------------
def fd_gradient(model, x, output, w, eps=1e-6):
    """d sum(w * output) / dx by central differences of the float64 model (onnx.reference)."""
    m64 = to_float64(model)
    x64 = x.astype(np.float64)
    g = np.zeros_like(x64)
    for i in range(x64.size):
        d = np.zeros_like(x64)
        d.flat[i] = eps
        f = lambda z: float((run_ref(m64, {"x": z})[output] * w).sum())  # noqa: E731
        g.flat[i] = (f(x64 + d) - f(x64 - d)) / (2 * eps)
    return g


def dense_model():
    """x [1, 2, 6, 6] -> Conv 3x3 (3 channels) -> Tanh -> Conv 1x1: a [1, 3, 6, 6] map."""
    r = np.random.default_rng(1)
    nodes = [
        h.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Tanh", ["c1"], ["t"]),
        h.make_node("Conv", ["t", "W2"], ["y"]),
    ]
    inits = [
        nh.from_array(r.normal(size=(3, 2, 3, 3)).astype(np.float32), "W1"),
        nh.from_array(r.normal(size=(3, 3, 1, 1)).astype(np.float32), "W2"),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 6, 6])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 3, 6, 6])],
        inits,
    )


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_region_target_matches_finite_differences(reduce):
    m = dense_model()
    x = np.random.default_rng(2).normal(size=(1, 2, 6, 6)).astype(np.float32)
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    ex = Explainer(m)
    t = ex.target(x, tg.Region(mask, cls=2, reduce=reduce))
    w = np.zeros((1, 3, 6, 6))
    w[0, 2][mask] = 1.0 / (mask.sum() if reduce == "mean" else 1)
    np.testing.assert_allclose(t.weights, w, rtol=1e-7)
    g = ex.run(x, "gradient", target=t).attribution
    np.testing.assert_allclose(g, fd_gradient(m, x, "y", w), rtol=1e-4, atol=1e-5)


def test_region_mask_on_the_input_grid_is_resized_and_empty_masks_fail():
    m = dense_model()
    x = np.zeros((1, 2, 6, 6), np.float32)
    ex = Explainer(m)
    big = np.zeros((12, 12), bool)
    big[:6, :6] = True
    t = ex.target(x, tg.Region(big, cls=0))
    assert t.weights[0, 0, :3, :3].all() and t.weights[0, 0].sum() == 9
    with pytest.raises(OnnxplainError, match="empty"):
        ex.target(x, tg.Region(np.zeros((6, 6), bool), cls=0))


def seq_model(T_=7, V=4):
    """A CTC-like recogniser: x [1, 1, 3, T] -> per column a Tanh MLP -> [1, T, V] logits."""
    r = np.random.default_rng(4)
    nodes = [
        h.make_node("Reshape", ["x", "s1"], ["cols"]),  # [1, 3, T]
        h.make_node("Transpose", ["cols"], ["tc"], perm=[0, 2, 1]),  # [1, T, 3]
        h.make_node("MatMul", ["tc", "W1"], ["h1"]),
        h.make_node("Tanh", ["h1"], ["a1"]),
        h.make_node("MatMul", ["a1", "W2"], ["y"]),
    ]
    inits = [
        nh.from_array(np.array([1, 3, T_], np.int64), "s1"),
        nh.from_array(r.normal(size=(3, 5)).astype(np.float32), "W1"),
        nh.from_array((r.normal(size=(5, V)) * 2).astype(np.float32), "W2"),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 3, T_])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, T_, V])],
        inits,
    )


def test_ctc_greedy_decode():
    assert tg.ctc_greedy(np.array([0, 3, 3, 0, 3, 1, 1, 0, 2])) == [(3, 1, 2), (3, 4, 4), (1, 5, 6), (2, 8, 8)]
    assert tg.ctc_greedy(np.array([0, 0])) == []


@pytest.mark.parametrize("spec", [tg.Sequence(char=1), tg.Sequence(position=3, token=2), tg.Sequence()])
def test_sequence_targets_match_finite_differences(spec):
    m = seq_model()
    x = np.random.default_rng(7).normal(size=(1, 1, 3, 7)).astype(np.float32)
    ex = Explainer(m)
    y = run_ref(to_float64(m), {"x": x.astype(np.float64)})["y"][0]
    path = y.argmax(axis=1)
    t = ex.target(x, spec)
    w = np.zeros((1, 7, 4))
    if spec.char is not None:
        runs = tg.ctc_greedy(path)
        k, t0, t1 = runs[spec.char]
        w[0, t0 + int(np.argmax(y[t0 : t1 + 1, k])), k] = 1
    elif spec.position is not None:
        w[0, 3, 2] = 1
    else:
        w[0, np.arange(7), path] = 1
    np.testing.assert_array_equal(t.weights, w)
    g = ex.run(x, "gradient", target=t).attribution
    np.testing.assert_allclose(g, fd_gradient(m, x, "y", w), rtol=1e-4, atol=1e-5)


def test_sequence_char_out_of_range():
    m = seq_model()
    with pytest.raises(OnnxplainError, match="out of range"):
        Explainer(m).target(np.zeros((1, 1, 3, 7), np.float32), tg.Sequence(char=50))


# ---- defaults and tasks ----------------------------------------------------------------------------
def test_guess_task():
    assert tg.guess_task(Explainer(dense_model()).canonical.graph)[0] == "segment"
    assert tg.guess_task(Explainer(seq_model()).canonical.graph)[0] == "sequence"
    big = _model(
        [h.make_node("Identity", ["x"], ["y"])],
        [h.make_tensor_value_info("x", T.FLOAT, [1, 84, 8400])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 84, 8400])],
        [],
    )
    assert tg.guess_task(Explainer(big).canonical.graph)[0] == "detect"


def one_channel_model():
    """x [1, 1, 8, 8] -> Conv 3x3 -> Sigmoid: a one-channel probability map."""
    r = np.random.default_rng(0)
    nodes = [h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Sigmoid", ["c"], ["p"])]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [1, 1, S, S])],
        [h.make_tensor_value_info("p", T.FLOAT, [1, 1, S, S])],
        [nh.from_array(r.normal(size=(1, 1, 3, 3)).astype(np.float32), "W")],
    )


def test_one_channel_map_occlusion_is_not_a_softmax_over_one_class():
    ex = Explainer(one_channel_model())
    a = ex.run(X, "occlusion", window=2).attribution  # default score: softmax, which a single class skips
    assert np.any(a != 0)
    mask = np.zeros((S, S), bool)
    mask[:4, :4] = True
    r = ex.run(X, "occlusion", window=2, target=tg.Region(mask)).attribution[0, 0]
    assert np.any(r[:5, :5] != 0) and np.all(r[6:, :] == 0) and np.all(r[:, 6:] == 0)


@pytest.mark.parametrize(
    "method,opts",
    [
        ("occlusion", {"window": 4}),
        ("rise", {"n_masks": 30}),
        ("lime", {"samples": 30, "n_segments": 6}),
        ("kernelshap", {"samples": 30, "n_segments": 6}),
        ("meaningful_perturbation", {"iterations": 2}),
    ],
)
def test_black_box_weights_equal_the_class_logit(method, opts):
    """A one-hot weight on class k scores sum(w * y) = y_k: the class target's logit score, map for map."""
    from models import tiny_cnn

    ex = Explainer(tiny_cnn(softmax=False))
    x = np.random.default_rng(0).uniform(size=(2, 3, 8, 8)).astype(np.float32)
    w = np.zeros((2, 5), np.float32)
    w[0, 3] = w[1, 1] = 1
    score = {} if method in ("lime", "kernelshap") else {"score": "logit"}
    a = ex.run(x, method, target=np.array([3, 1]), **score, **opts).attribution
    b = ex.run(x, method, target_weights=w, **score, **opts).attribution
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.any(a != 0)
