"""Attention rollout and Chefer et al. 2021 against numpy re-implementations of the papers; token maps for
ViTs (patch grid, class token dropped) and text models (per-token scores); the highlighted-text PNG.

The attention maps come from onnxruntime (the model with its Softmax outputs added as outputs); the
gradients dY/dA that Chefer's rule weighs them with from the gradient method on a copy of the model whose
map is cut out into a graph input (the VJPs have their own oracle tests). Everything else is numpy, following
the papers.
"""

import pathlib

import numpy as np
import onnx
import pytest

import onnxplain
from models import tiny_cnn
from onnxplain import OnnxplainError
from onnxplain.graph.load import load_model
from onnxplain.runtime.session import make_session

ZOO = pathlib.Path(__file__).parent / "zoo"
DEMO = pathlib.Path(__file__).resolve().parent.parent / "models" / "demo"
VITS = ["vit_ts17.onnx", "vit_dynamo18.onnx"]


def softmax_maps(model):
    """Names and values of the attention Softmax outputs, in graph order, and the logits."""
    names = [n.output[0] for n in model.graph.node if n.op_type == "Softmax"]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return names, make_session(m)


def grad_wrt_map(model, name, value, inp, x, target):
    """dY/dA for the attention map ``name``: the map cut out into a graph input (its consumers read the input,
    everything else still computed from x), then the gradient method on that input."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in m.graph.node:
        node.input[:] = [f"{name}:in" if i == name else i for i in node.input]
    m.graph.input.append(onnx.helper.make_tensor_value_info(f"{name}:in", onnx.TensorProto.FLOAT, list(value.shape)))
    ex = onnxplain.Explainer(m, input=f"{name}:in", feeds={inp: x})
    return ex.run(value, "gradient", target=target).attribution


def numpy_rollout(maps):
    """Abnar & Zuidema 2020: prod over layers (later on the left) of row-normalised 0.5 mean_h A + 0.5 I."""
    r = None
    for a in maps:
        t = a.shape[-1]
        a = 0.5 * a.mean(1) + 0.5 * np.eye(t)
        a = a / a.sum(-1, keepdims=True)
        r = a if r is None else a @ r
    return r


def numpy_chefer(maps, grads):
    """Chefer et al. 2021 (ICCV) sec. 3.1: R = I; R += mean_h((grad * A)^+) R per layer."""
    t = maps[0].shape[-1]
    r = np.broadcast_to(np.eye(t), (maps[0].shape[0], t, t)).copy()
    for a, g in zip(maps, grads):
        bar = np.maximum(g * a, 0).mean(1)
        r = r + bar @ r
    return r


@pytest.mark.parametrize("name", VITS)
def test_rollout_and_chefer_match_numpy_on_zoo_vits(name):
    model = load_model(ZOO / name)
    inp = model.graph.input[0].name
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    names, sess = softmax_maps(model)
    out = sess.run(None, {inp: x})
    logits, maps = out[0], out[1:]
    target = int(logits[0].argmax())
    ex = onnxplain.Explainer(model)
    grads = [grad_wrt_map(model, n, a, inp, x, target) for n, a in zip(names, maps)]
    for method, r in [("attention_rollout", numpy_rollout(maps)), ("chefer", numpy_chefer(maps, grads))]:
        res = ex.run(x, method, target=target)
        want = r[:, 0, 1:].reshape(1, 1, 4, 4)  # the class token's row, the 4x4 patch grid
        np.testing.assert_allclose(res.outputs["attribution_layer"], want, rtol=1e-4, atol=1e-6)
        assert res.attribution.shape == (1, 1, 32, 32) and res.attribution.min() >= 0


def test_chefer_depends_on_the_class_rollout_does_not():
    model = load_model(ZOO / "vit_ts17.onnx")
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    ex = onnxplain.Explainer(model)
    ch = [ex.run(x, "chefer", target=t).outputs["attribution_layer"] for t in (0, 1)]
    ro = [ex.run(x, "attention_rollout", target=t).outputs["attribution_layer"] for t in (0, 1)]
    assert not np.allclose(ch[0], ch[1])
    np.testing.assert_array_equal(ro[0], ro[1])


def test_models_without_attention_are_refused():
    x = np.random.default_rng(0).uniform(size=(1, 3, 8, 8)).astype(np.float32)
    for method in ("attention_rollout", "chefer"):
        with pytest.raises(OnnxplainError, match="no attention map .*Softmax nodes over the last axis"):
            onnxplain.Explainer(tiny_cnn()).run(x, method)


def test_text_model_gets_per_token_scores():
    """keyword_bert.onnx reads its [CLS] token: the maps are that row over the 16 tokens, [CLS] itself 0."""
    from onnxplain.io.keywords_data import make_keywords

    model = load_model(DEMO / "keyword_bert.onnx")
    ids, labels, pos = make_keywords(3, seed=7)
    ex = onnxplain.Explainer(model)
    names, sess = softmax_maps(model)
    maps = sess.run(None, {"ids": ids})[1:]
    for i in range(3):
        res = ex.run(ids[i : i + 1], "attention_rollout")
        want = numpy_rollout([m[i : i + 1] for m in maps])[0, 0].copy()
        want[0] = 0
        np.testing.assert_allclose(res.attribution[0], want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(res.outputs["token_scores"][0], want, rtol=1e-5, atol=1e-7)
    for method in ("attnlrp", "cp_lrp", "chefer"):
        res = ex.run(ids, method)
        assert res.outputs["token_scores"].shape == (3, 16)
        np.testing.assert_array_equal(res.target, labels)
        # the keyword decides the label: every method ranks it first here
        assert (res.outputs["token_scores"][:, 1:].argmax(1) + 1 == pos).all(), method


def test_highlighted_text_png(tmp_path):
    from PIL import Image

    from onnxplain.io.text import render_tokens, token_colours

    assert token_colours([-2.0, 0.0, 1.0]) == [(0, 0, 255), (255, 255, 255), (255, 128, 128)]  # 127.5 rounds to even
    path = render_tokens(["[CLS]", "w7", "alpha", "w9"], [0.0, -0.5, 2.0, 0.1], tmp_path / "t.png", title="t")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] == 720
    assert ((img == [255, 0, 0]).all(-1)).sum() > 100  # the top token's box is pure red
    assert ((img[..., 2] > 200) & (img[..., 0] < 200) & (img[..., 1] < 200)).sum() > 50  # a blue box
    with pytest.raises(OnnxplainError, match="one score per token"):
        render_tokens(["a"], [1.0, 2.0], tmp_path / "u.png")
