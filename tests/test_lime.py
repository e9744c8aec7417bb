"""LIME and KernelSHAP over superpixels (onnxplain.methods.lime)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import tiny_cnn
from onnxplain import Explainer
from onnxplain.errors import OnnxplainError
from onnxplain.methods import lime

H = W = 12


def blocks(h=H, w=W, rows=2, cols=3):
    """A fixed segmentation: a rows x cols grid of rectangles, labelled 0..rows*cols-1."""
    r = np.minimum(np.arange(h) * rows // h, rows - 1)
    c = np.minimum(np.arange(w) * cols // w, cols - 1)
    return (r[:, None] * cols + c[None, :]).astype(np.int64)


def linear_model(segments, w, channels=3, batch="N", nhwc=False):
    """logit_0 = sum_k w_k * mean of region k of x (over its pixels and channels); logit_1 = -logit_0.

    Hiding region k with a fill of 0 removes exactly w_k * mean_k."""
    h, wd = segments.shape
    counts = np.bincount(segments.ravel())
    m = (np.asarray(w)[segments] / (counts[segments] * channels)).astype(np.float32)  # [H, W]
    full = np.broadcast_to(m[..., None] if nhwc else m[None], (h, wd, channels) if nhwc else (channels, h, wd))
    flat = full.reshape(-1)
    mat = np.stack([flat, -flat], axis=1).astype(np.float32)
    shape = [batch, h, wd, channels] if nhwc else [batch, channels, h, wd]
    inits = [
        numpy_helper.from_array(mat, "M"),
        numpy_helper.from_array(np.array([-1 if batch != 1 else 1, flat.size], np.int64), "shape"),
    ]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "M"], ["logits"])]
    g = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def truth(x, segments, w, nhwc=False):
    """w_k * mean_k for each item: [N, K]."""
    chw = np.moveaxis(x, -1, 1) if nhwc else x
    k = segments.max() + 1
    return np.stack([[w[j] * chw[i][:, segments == j].mean() for j in range(k)] for i in range(len(x))])


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    seg = blocks()
    w = rng.normal(size=seg.max() + 1)
    x = rng.uniform(0.2, 1.0, size=(2, 3, H, W)).astype(np.float32)
    return seg, w, x


def test_kernelshap_recovers_linear_weights_exactly(setup):
    seg, w, x = setup
    ex = Explainer(linear_model(seg, w))
    res = ex.run(x, "kernelshap", target=0, segments=seg, fill=0.0)
    want = truth(x, seg, w)
    np.testing.assert_allclose(res.outputs["superpixel_weights"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.outputs["intercept"], 0.0, atol=1e-5)  # f(all hidden) = f(0)
    assert res.attribution.shape == (2, 1, H, W)
    np.testing.assert_allclose(res.attribution[:, 0], np.stack([want[i][seg] for i in range(2)]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(res.target, [0, 0])
    np.testing.assert_array_equal(res.outputs["segments"], np.stack([seg, seg]))


def test_kernelshap_sampled_coalitions_still_exact_on_a_linear_model():
    rng = np.random.default_rng(1)
    seg = blocks(16, 16, 3, 4)  # 12 superpixels: 4094 coalitions > samples, so they are drawn
    w = rng.normal(size=12)
    x = rng.uniform(0.2, 1.0, size=(1, 3, 16, 16)).astype(np.float32)
    ex = Explainer(linear_model(seg, w))
    res = ex.run(x, "kernelshap", target=0, segments=seg, fill=0.0, samples=300)
    np.testing.assert_allclose(res.outputs["superpixel_weights"], truth(x, seg, w), rtol=1e-4, atol=1e-5)


def test_lime_recovers_linear_weights(setup):
    seg, w, x = setup
    ex = Explainer(linear_model(seg, w))
    want = truth(x, seg, w)
    res = ex.run(x, "lime", target=0, segments=seg, fill=0.0, samples=300, alpha=1e-6)
    np.testing.assert_allclose(res.outputs["superpixel_weights"], want, rtol=1e-3, atol=1e-4)
    # the default ridge (alpha 1, as in the authors' code) shrinks a little but keeps the picture
    res = ex.run(x, "lime", target=0, segments=seg, fill=0.0, samples=300)
    got = res.outputs["superpixel_weights"]
    assert np.all(np.sign(got) == np.sign(want))
    np.testing.assert_allclose(got, want, atol=0.35 * np.abs(want).max())
    # target 1 is the negated logit
    res1 = ex.run(x, "lime", target=1, segments=seg, fill=0.0, samples=300, alpha=1e-6)
    np.testing.assert_allclose(res1.outputs["superpixel_weights"], -want, rtol=1e-3, atol=1e-4)


def test_nhwc_input_layout():
    rng = np.random.default_rng(2)
    seg = blocks()
    w = rng.normal(size=6)
    x = rng.uniform(0.2, 1.0, size=(1, H, W, 3)).astype(np.float32)
    ex = Explainer(linear_model(seg, w, nhwc=True), channel_axis=-1)
    res = ex.run(x, "kernelshap", target=0, segments=seg, fill=0.0)
    np.testing.assert_allclose(res.outputs["superpixel_weights"], truth(x, seg, w, nhwc=True), rtol=1e-4, atol=1e-5)
    res = ex.run(x, "lime", target=0, samples=50, n_segments=8)  # segmented on the HWC image
    assert res.attribution.shape == (1, 1, H, W) and res.outputs["segments"].shape == (1, H, W)


def test_kernelshap_efficiency_on_a_nonlinear_model():
    x = np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)
    ex = Explainer(tiny_cnn())
    for fill in ("mean", 0.5):
        res = ex.run(x, "kernelshap", n_segments=6, fill=fill, samples=100)
        phi = res.outputs["superpixel_weights"].sum(axis=1)
        np.testing.assert_allclose(phi, res.outputs["score"] - res.outputs["intercept"], rtol=1e-6, atol=1e-6)
        assert res.outputs["prob"].shape == (2, 5)
        np.testing.assert_array_equal(res.target, res.outputs["prob"].argmax(axis=1))


def test_mean_fill_and_fill_value():
    item = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    seg = blocks(4, 4, 2, 2)
    p = lime.Perturber(item, seg, "segment_mean", 1)
    out = p(np.array([[1, 1, 1, 1], [0, 1, 1, 1]]))
    np.testing.assert_array_equal(out[0], item)
    np.testing.assert_allclose(out[1][:, seg == 0], item[:, seg == 0].mean(axis=1, keepdims=True).repeat(4, 1))
    np.testing.assert_array_equal(out[1][:, seg != 0], item[:, seg != 0])
    for fill in ("image_mean", "mean"):  # the item's per-channel mean, the same for every hidden superpixel
        out = lime.Perturber(item, seg, fill, 1)(np.array([[0, 1, 1, 0]]))[0]
        for c in range(2):
            np.testing.assert_allclose(out[c][(seg == 0) | (seg == 3)], item[c].mean())
        np.testing.assert_array_equal(out[:, (seg == 1) | (seg == 2)], item[:, (seg == 1) | (seg == 2)])
    flat = np.full((2, 16, 16), 0.25, np.float32)  # blur of a constant image is that constant
    np.testing.assert_allclose(
        lime.Perturber(flat, blocks(16, 16, 4, 4), "blur", 1)(np.zeros((1, 16)))[0], 0.25, rtol=1e-6
    )
    out = lime.Perturber(item, seg, 7.0, 1)(np.zeros((1, 4)))
    assert np.all(out == 7)


def test_seeds_reproduce(setup):
    seg, w, x = setup
    ex = Explainer(tiny_cnn())
    xx = np.random.default_rng(4).normal(size=(1, 3, 8, 8)).astype(np.float32)
    a = ex.run(xx, "lime", n_segments=8, samples=64, seed=5).outputs["superpixel_weights"]
    b = ex.run(xx, "lime", n_segments=8, samples=64, seed=5).outputs["superpixel_weights"]
    c = ex.run(xx, "lime", n_segments=8, samples=64, seed=6).outputs["superpixel_weights"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    k = lime.shap_samples(10, 50, np.random.default_rng(0))[0]
    np.testing.assert_array_equal(k, lime.shap_samples(10, 50, np.random.default_rng(0))[0])


@pytest.mark.parametrize("method", lime.SEGMENTATIONS)
@pytest.mark.parametrize("size,channels", [((16, 16), 3), ((64, 48), 3), ((32, 32), 1)])
def test_segmentations_give_label_maps(method, size, channels):
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(*size, channels))
    img[: size[0] // 2] *= 0.2  # some structure
    labels = lime.segment(img, method)
    assert labels.shape == size and labels.dtype == np.int64
    assert labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1))
    assert labels.max() >= 1


def test_to_image_layouts():
    chw = np.random.default_rng(0).normal(size=(3, 5, 7))
    a = lime.to_image(chw, 1)
    b = lime.to_image(np.moveaxis(chw, 0, -1), -1)
    assert a.shape == (5, 7, 3) and a.min() == 0 and a.max() == 1
    np.testing.assert_array_equal(a, b)
    assert lime.to_image(chw[0], 1).shape == (5, 7, 1)


def test_fixed_batch_1_model(setup):
    seg, w, x = setup
    want = truth(x, seg, w)
    ex = Explainer(linear_model(seg, w, batch=1))
    res = ex.run(x, "kernelshap", target=0, segments=seg, fill=0.0)
    np.testing.assert_allclose(res.outputs["superpixel_weights"], want, rtol=1e-4, atol=1e-5)
    a = ex.run(x[:1], "lime", target=0, segments=seg, samples=40, seed=1).attribution
    b = Explainer(linear_model(seg, w)).run(x[:1], "lime", target=0, segments=seg, samples=40, seed=1).attribution
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_progress_and_errors(setup):
    seg, w, x = setup
    ex = Explainer(linear_model(seg, w))
    seen = []
    ex.run(x, "lime", segments=seg, samples=30, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (60, 60) and all(t == 60 for _, t in seen)
    with pytest.raises(OnnxplainError, match="segmentation"):
        ex.run(x, "lime", segmentation="watershed")
    with pytest.raises(OnnxplainError, match="segments must have shape"):
        ex.run(x, "lime", segments=np.zeros((3, 3), np.int64))
    with pytest.raises(OnnxplainError, match="fill"):
        ex.run(x, "kernelshap", segments=seg, fill="blue")
    with pytest.raises(OnnxplainError, match="gradient does not take 'segments'"):
        ex.run(x, "gradient", segments=seg)


def test_shapley_kernel_values():
    # pi(z) = (M-1) / (C(M,|z|) |z| (M-|z|))
    assert lime.shapley_kernel(4, [1])[0] == pytest.approx(3 / (4 * 1 * 3))
    assert lime.shapley_kernel(4, [2])[0] == pytest.approx(3 / (6 * 2 * 2))
    z, wts = lime.shap_samples(4, 100, np.random.default_rng(0))
    assert len(z) == 14 and wts.shape == (14,)
    kern = lime.lime_kernel(np.array([[1, 1, 1, 1], [1, 1, 0, 0]]), 0.25)
    d = 1 - 2 / (np.sqrt(2) * 2)
    np.testing.assert_allclose(kern, [1.0, np.sqrt(np.exp(-d * d / 0.0625))])


def test_cli_explain_lime_and_kernelshap(tmp_path):
    import onnx
    from typer.testing import CliRunner

    from onnxplain.cli import app

    model = tmp_path / "m.onnx"
    onnx.save_model(tiny_cnn(), str(model))
    x = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "explain",
            str(model),
            str(tmp_path / "a.npy"),
            "-m",
            "lime",
            "-m",
            "kernelshap",
            "--samples",
            "40",
            "--n-segments",
            "6",
            "--fill",
            "0",
            "-d",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    for m in ("lime", "kernelshap"):
        a = np.load(out / f"a.{m}.npy")
        assert a.shape == (1, 8, 8)
        b = Explainer(tiny_cnn()).run(x[None], m, samples=40, n_segments=6, fill=0.0, batch_size=16).attribution[0]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    r = runner.invoke(
        app, ["explain", str(model), str(tmp_path / "a.npy"), "-m", "lime", "--fill", "blue", "-d", str(out)]
    )
    assert r.exit_code == 2 and "--fill" in r.output
    r = runner.invoke(app, ["export", str(model), "-m", "lime", "-o", str(tmp_path / "e.onnx")])
    assert r.exit_code == 2 and "no single explanation graph" in r.output
