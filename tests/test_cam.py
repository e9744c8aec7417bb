"""Grad-CAM family (onnxplain/methods/cam.py) against a numpy oracle.

The oracle takes the layer's activation A and its gradient G = dY/dA by a separate path:

* A: the original model (float64, onnx.reference) with the layer as an extra output;
* G: the model cut at the layer — the layer's producer no longer feeds it, the layer becomes a
  graph input — whose gradient w.r.t. that input is checked against central finite differences
  along random directions, so that G does not rest on the CAM graph's own backward pass;

then each CAM is computed in numpy (token maps read as a grid by hand) and upsampled with a numpy
bilinear half-pixel resize, and compared with the exported graph run in float64 by the reference
evaluator and in float32 by onnxruntime.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from oracle import gradient_graph, run_ref, to_float64

import onnxplain
from onnxplain.errors import OnnxplainError
from onnxplain.graph.canonicalize import canonicalize
from onnxplain.graph.taps import find_tap
from onnxplain.runtime.session import make_session

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "tests" / "zoo"
DEMO = ROOT / "models" / "demo" / "shapes_cnn.onnx"
CAMS = ("gradcam", "gradcam_pp", "hirescam", "layercam", "xgradcam", "guided_gradcam")
VIT_BLOCK0 = "/blocks/blocks.0/norm1/LayerNormalization_output_0"


@functools.cache
def _model(path: str) -> onnx.ModelProto:
    return onnx.load(path)


def _x(model, batch=2, seed=0):
    dims = [d.dim_value or batch for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).normal(size=dims).astype(np.float32)


# ---- the oracle ------------------------------------------------------------------------------------
def _with_outputs(model, names):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in names if n not in have)
    return m


def _cut(m64, layer, shape, logits):
    """``m64`` with ``layer`` as a graph input instead of its producer's output; logits an output."""
    m = _with_outputs(m64, [logits])
    producers = [n for n in m.graph.node if layer in n.output]
    assert len(producers) == 1, layer
    out = producers[0].output
    out[list(out).index(layer)] = layer + "__cut"
    m.graph.input.append(helper.make_tensor_value_info(layer, TensorProto.DOUBLE, list(shape)))
    return m


@functools.cache
def oracle(path: str, layer: str, target: tuple, batch: int = 2):
    """(x, A, G) in float64 for ``target`` (one class per item), G checked by finite differences."""
    model = _model(path)
    m64 = to_float64(model)
    xname = model.graph.input[0].name
    logits = onnxplain.build(model, "gradient").metadata_props
    logits = next(p.value for p in logits if p.key == "onnxplain.explained")
    x = _x(model, batch).astype(np.float64)
    outs = run_ref(_with_outputs(m64, [layer, logits]), {xname: x})
    a, y = outs[layer], outs[logits]
    w = np.zeros_like(y)
    w[np.arange(len(target)), list(target)] = 1.0
    cut = _cut(m64, layer, a.shape, logits)
    feeds = {xname: x, layer: a}
    np.testing.assert_allclose(run_ref(cut, feeds)[logits], y, rtol=1e-10, atol=1e-12)  # the cut is exact
    g = run_ref(gradient_graph(cut, layer, logits), {**feeds, "target_weights": w})["attribution"]

    def f(av):
        return float(np.sum(w * run_ref(cut, {xname: x, layer: av})[logits]))

    rng, h = np.random.default_rng(1), 1e-5
    for _ in range(3):
        u = rng.normal(size=a.shape)
        fd = (f(a + h * u) - f(a - h * u)) / (2 * h)
        assert abs(np.sum(g * u) - fd) <= 1e-6 * max(1.0, abs(fd)), (np.sum(g * u), fd)
    return x, a, g


def as_grid(t, prefix, grid):
    """Token map [N, T, D] -> [N, D, gh, gw], written out index by index (not the package's code)."""
    if t.ndim == 4:
        return t
    n, _, d = t.shape
    gh, gw = grid
    out = np.empty((n, d, gh, gw))
    for i in range(gh):
        for j in range(gw):
            out[:, :, i, j] = t[:, prefix + i * gw + j, :]
    return out


def bilinear(m, size):
    """[N, 1, h, w] -> [N, 1, H, W]: bilinear, half-pixel centres, edges clamped."""

    def weights(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        mat = np.zeros((n_out, n_in))
        mat[np.arange(n_out), lo] += 1 - (src - lo)
        mat[np.arange(n_out), hi] += src - lo
        return mat

    rows, cols = weights(m.shape[2], size[0]), weights(m.shape[3], size[1])
    return np.einsum("Hh,nchw,Ww->ncHW", rows, m, cols)


def relu(v):
    return np.maximum(v, 0)


def numpy_cam(method, a, g):
    s = (2, 3)
    if method in ("gradcam", "guided_gradcam"):
        w = g.mean(axis=s, keepdims=True)
        return relu((w * a).sum(1, keepdims=True))
    if method == "gradcam_pp":
        alpha = g**2 / (2 * g**2 + a.sum(axis=s, keepdims=True) * g**3 + 1e-6)
        w = (alpha * relu(g)).sum(axis=s, keepdims=True)
        return relu((w * a).sum(1, keepdims=True))
    if method == "hirescam":
        return relu((g * a).sum(1, keepdims=True))
    if method == "layercam":
        return relu((relu(g) * a).sum(1, keepdims=True))
    if method == "xgradcam":
        w = (a * g).sum(axis=s, keepdims=True) / (a.sum(axis=s, keepdims=True) + 1e-7)
        return relu((w * a).sum(1, keepdims=True))
    raise AssertionError(method)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


# ---- the oracle check ------------------------------------------------------------------------------
CAM_CASES = [  # (model, layer option, expected layer, token prefix, token grid)
    ("zoo/resnet_ts13.onnx", None, "/layer3/Relu_1_output_0", 0, None),
    ("demo", None, "/features/features.17/Relu_output_0", 0, None),
    ("zoo/vit_ts17.onnx", None, "/blocks/blocks.1/norm1/LayerNormalization_output_0", 1, (4, 4)),
    ("zoo/vit_ts17.onnx", VIT_BLOCK0, VIT_BLOCK0, 1, (4, 4)),
    ("zoo/resnet_ts13.onnx", "/layer2/Relu_1_output_0", "/layer2/Relu_1_output_0", 0, None),
]


def _path(name):
    return str(DEMO if name == "demo" else ZOO / name.split("/", 1)[1])


@pytest.mark.parametrize("method", CAMS)
@pytest.mark.parametrize("case", CAM_CASES, ids=lambda c: f"{c[0].split('/')[-1]}:{c[1] or 'default'}")
def test_cam_matches_numpy_oracle(case, method):
    name, layer, expected, prefix, grid = case
    path = _path(name)
    model = _model(path)
    target = (3, 1)
    explained = onnxplain.build(model, method, onnxplain.Options(layer=layer))
    meta = {p.key: p.value for p in explained.metadata_props}
    assert meta["onnxplain.layer"] == expected
    x, a, g = oracle(path, expected, target)
    ga, gg = as_grid(a, prefix, grid), as_grid(g, prefix, grid)
    want_layer = numpy_cam(method, ga, gg)
    want = bilinear(want_layer, x.shape[2:])
    if method == "guided_gradcam":
        guided = run_ref(
            to_float64(onnxplain.build(model, "guided_backprop")),
            {model.graph.input[0].name: x, "target": np.array(target)},
        )["attribution"]
        want = want * guided
    feeds = {model.graph.input[0].name: x, "target": np.array(target, dtype=np.int64)}
    got = run_ref(to_float64(explained), feeds)
    assert got["attribution"].shape == want.shape and got["attribution_layer"].shape == want_layer.shape
    assert _rel(got["attribution_layer"], want_layer) < 1e-7
    assert _rel(got["attribution"], want) < 1e-7
    assert np.linalg.norm(want_layer) > 0  # not a vacuous match
    got32 = make_session(explained).run(
        ["attribution", "attribution_layer"], {**feeds, model.graph.input[0].name: x.astype(np.float32)}
    )
    assert _rel(got32[1], want_layer) < 1e-3
    assert _rel(got32[0], want) < 1e-3


# ---- contract ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", CAMS)
def test_cam_graph_checks_and_keeps_dynamic_batch(method):
    model = _model(str(ZOO / "resnet_ts13.onnx"))
    m = onnxplain.build(model, method)
    onnx.checker.check_model(m, full_check=True)
    outs = {o.name: o for o in m.graph.output}
    for name in ("attribution", "attribution_layer"):
        assert outs[name].type.tensor_type.shape.dim[0].dim_param, name  # symbolic batch
    x = _x(model, batch=3)
    att, lay, idx = make_session(m).run(["attribution", "attribution_layer", "target_index"], {"input": x})
    assert lay.shape == (3, 1, 8, 8) and idx.shape == (3,)
    assert att.shape == ((3, 1, 32, 32) if method != "guided_gradcam" else x.shape)
    assert np.isfinite(att).all() and (method == "guided_gradcam" or (att >= 0).all())


def test_vit_fixed_batch_dynamo_export():
    model = _model(str(ZOO / "vit_dynamo18.onnx"))
    m = onnxplain.build(model, "gradcam")
    onnx.checker.check_model(m, full_check=True)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["onnxplain.layer_grid"] == "1 prefix tokens + 4x4"
    att, lay = make_session(m).run(["attribution", "attribution_layer"], {"input": _x(model, 1)})
    assert att.shape == (1, 1, 32, 32) and lay.shape == (1, 1, 4, 4) and lay.max() > 0


def test_unknown_layer_is_one_line_error():
    model = _model(str(ZOO / "resnet_ts13.onnx"))
    with pytest.raises(OnnxplainError) as err:
        onnxplain.build(model, "gradcam", onnxplain.Options(layer="no_such_layer"))
    msg = str(err.value)
    assert "no_such_layer" in msg and "\n" not in msg


def test_layer_by_node_name_and_off_path_layer():
    model = _model(str(ZOO / "resnet_ts13.onnx"))
    can = canonicalize(model)
    node = next(n for n in can.graph.nodes if "/layer2/Relu_1_output_0" in [t.name for t in n.outputs])
    assert find_tap(can, node.name).name == "/layer2/Relu_1_output_0"
    with pytest.raises(OnnxplainError, match="not between"):
        find_tap(can, next(n for n in can.graph.nodes if n.op == "Conv").inputs[1].name)  # a weight
    with pytest.raises(OnnxplainError, match="CAMs need"):
        find_tap(can, "logits")


def test_prefix_tokens_option_and_ambiguity():
    from onnxplain.graph.taps import token_layout

    assert token_layout(17, [1, 3, 32, 32]) == (1, (4, 4))
    assert token_layout(17, [1, 3, 32, 32], prefix_tokens=1) == (1, (4, 4))
    assert token_layout(20, [1, 3, 32, 32], (4, 4)) == (4, (4, 4))  # class + 3 registers
    assert token_layout(21, [1, 3, 32, 32], prefix_tokens=5) == (5, (4, 4))
    with pytest.raises(OnnxplainError, match="ambiguous.*prefix-tokens"):
        token_layout(10, [1, 3, 12, 12])  # 1 + 3x3 or 6 + 2x2
    with pytest.raises(OnnxplainError, match="does not split.*prefix-tokens"):
        token_layout(3, [1, 3, 32, 32])
    with pytest.raises(OnnxplainError, match="not a square grid"):
        token_layout(17, [1, 3, 32, 32], prefix_tokens=2)
    model = _model(str(ZOO / "vit_ts17.onnx"))
    m = onnxplain.build(model, "hirescam", onnxplain.Options(prefix_tokens=1))
    assert {p.key: p.value for p in m.metadata_props}["onnxplain.layer_grid"] == "1 prefix tokens + 4x4"


def test_no_automatic_layer_on_a_segmenter_or_tabular_model():
    for name in ("segnet_ts11.onnx", "sklearn_mlp.onnx"):
        with pytest.raises(OnnxplainError, match="--layer|image input"):
            onnxplain.build(_model(str(ZOO / name)), "gradcam")


def test_inspect_shows_the_cam_choice():
    from onnxplain.graph.describe import describe

    for name, expected in (
        ("vit_ts17.onnx", "/blocks/blocks.1/norm1/LayerNormalization_output_0"),
        ("resnet_ts13.onnx", "/layer3/Relu_1_output_0"),
    ):
        model = _model(str(ZOO / name))
        cam = describe(model)["cam_candidates"]
        assert [c["tensor"] for c in cam if c["default"]] == [expected]
        assert find_tap(canonicalize(model)).name == expected


# ---- command line -----------------------------------------------------------------------------------
def _invoke(*args):
    from typer.testing import CliRunner

    from onnxplain.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_export_layer_and_prefix_tokens(tmp_path):
    out = tmp_path / "vit.gradcam.onnx"
    res = _invoke(
        "export", ZOO / "vit_ts17.onnx", "-m", "layercam", "-o", out, "--layer", VIT_BLOCK0, "--prefix-tokens", "1"
    )
    assert res.exit_code == 0, res.output
    assert f"layer    '{VIT_BLOCK0}' (tokens: 1 prefix tokens + 4x4)" in res.output
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert [o.name for o in m.graph.output][-1] == "attribution_layer"
    res = _invoke("export", ZOO / "resnet_ts13.onnx", "-m", "gradcam", "-o", tmp_path / "r.onnx", "--layer", "nope")
    assert res.exit_code == 2 and "nope" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.onnx").exists()


def test_cli_explain_renders_cam_overlays(tmp_path):
    from onnxplain.io.shapes_data import make_shapes

    images, _, _ = make_shapes(1, seed=3)
    np.save(tmp_path / "s.npy", images[0])
    res = _invoke(
        "explain",
        DEMO,
        tmp_path / "s.npy",
        "-m",
        "gradcam",
        "-m",
        "guided_gradcam",
        "-d",
        tmp_path / "out",
        "--layer",
        "/features/features.17/Relu_output_0",
    )
    assert res.exit_code == 0, res.output
    cam = np.load(tmp_path / "out" / "s.gradcam.npy")
    assert cam.shape == (1, 64, 64) and cam.min() >= 0 and cam.max() > 0
    assert np.load(tmp_path / "out" / "s.guided_gradcam.npy").shape == (3, 64, 64)
    for name in ("s.gradcam.png", "s.guided_gradcam.png", "comparison.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_cli_inspect_marks_the_cam_default():
    res = _invoke("inspect", ZOO / "vit_ts17.onnx")
    assert res.exit_code == 0, res.output
    star = [ln for ln in res.output.splitlines() if ln.strip().startswith("*")]
    assert len(star) == 1 and "/blocks/blocks.1/norm1/LayerNormalization_output_0" in star[0]


def _zoo_classifiers():
    import json

    entries = json.loads((ZOO / "manifest.json").read_text())
    # not segmentation, hand-written graphs or the CRNN (per-column logits, no pooled class head)
    return [
        e
        for e in entries
        if len(e["input_shape"]) == 4 and e["family"] not in ("segnet", "recurrent") and not e["file"].startswith("hw_")
    ]


@pytest.mark.parametrize("entry", _zoo_classifiers(), ids=lambda e: e["file"])
def test_every_zoo_image_classifier_gets_an_automatic_layer(entry):
    model = _model(str(ZOO / entry["file"]))
    x = np.random.default_rng(0).normal(size=entry["input_shape"]).astype(np.float32)
    for method in ("gradcam", "gradcam_pp"):
        m = onnxplain.build(model, method)
        onnx.checker.check_model(m, full_check=True)
        att, lay = make_session(m).run(["attribution", "attribution_layer"], {entry["input"]: x})
        assert att.shape == (x.shape[0], 1, *x.shape[2:]) and lay.shape[:2] == (x.shape[0], 1)
        assert np.isfinite(att).all() and att.min() >= 0


def test_renderer_copes_with_one_channel_maps():
    from onnxplain.io import render

    assert render.to_2d(np.ones((1, 5, 6)), channel_axis=2).shape == (5, 6)  # [1, H, W] in an NHWC run
    assert render.to_2d(np.ones((1, 5, 6)), channel_axis=0).shape == (5, 6)
    assert not render.is_signed("gradcam") and not render.is_signed("hirescam") and render.is_signed("guided_gradcam")
