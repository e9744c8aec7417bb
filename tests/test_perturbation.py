"""Meaningful and extremal perturbation: masks optimised over the gradient graph find a model's only region."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain.errors import OnnxplainError
from onnxplain.methods.perturbation import Problem
from onnxplain.runtime.explainer import Explainer
from onnxplain.runtime.session import make_session

SIZE, REGION = 32, (8, 20, 12, 24)


def texture_model(batch="N", gain=12.0, bias=-3.0):
    """Two-class softmax; logit_0 = gain * mean(checkerboard * x[channel 0]) over one square + bias,
    logit_1 = 0: a fine texture detector that only that square feeds (blurring it removes the class)."""
    y0, y1, x0, x1 = REGION
    cb = (np.indices((SIZE, SIZE)).sum(0) % 2) * 2 - 1.0
    ind = np.zeros((SIZE, SIZE), np.float32)
    ind[y0:y1, x0:x1] = 1
    w = np.zeros((2, 2, SIZE, SIZE), np.float32)
    w[0, 0] = gain * ind * cb / ind.sum()
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W", "B"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["p"], axis=1),
    ]
    g = helper.make_graph(
        nodes,
        "texture",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, SIZE, SIZE])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [batch, 2])],
        [numpy_helper.from_array(w.reshape(2, -1), "W"), numpy_helper.from_array(np.array([bias, 0], np.float32), "B")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), ind


def texture_images(n=1, seed=0):
    _, ind = texture_model()
    cb = (np.indices((SIZE, SIZE)).sum(0) % 2).astype(np.float32)
    x = np.random.default_rng(seed).random((n, 2, SIZE, SIZE)).astype(np.float32) * 0.2
    x[:, 0] += cb * ind
    return x


def test_deletion_drops_the_score_inside_the_region():
    model, ind = texture_model()
    x = texture_images()
    ex = Explainer(model)
    p0 = make_session(model).run(None, {"x": x})[0][0, 0]
    calls = []
    r = ex.run(
        x,
        "meaningful_perturbation",
        target=0,
        iterations=100,
        mask_size=8,
        blur=2,
        l1=0.7,
        score="softmax",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (100, 100) and len(calls) == 100
    a = r.attribution[0, 0]
    assert r.attribution.shape == (1, 1, SIZE, SIZE) and r.outputs["mask"].shape == (1, 1, SIZE, SIZE)
    np.testing.assert_allclose(a, 1 - r.outputs["mask"][0, 0], atol=1e-6)
    assert r.outputs["mask_lowres"].shape == (1, 8, 8)
    np.testing.assert_allclose(r.outputs["score"], [p0], rtol=1e-5)
    # the blurred-in mask destroys the class: the perturbed probability is far below the original
    assert p0 > 0.9 and r.outputs["perturbed_score"][0] < 0.2
    mask = r.outputs["mask"][0, 0].astype(np.float64)
    xp = (mask * x + (1 - mask) * _blur(x, 2)).astype(np.float32)
    np.testing.assert_allclose(
        make_session(model).run(None, {"x": xp})[0][0, 0], r.outputs["perturbed_score"][0], rtol=1e-4, atol=1e-6
    )
    # importance lies inside the region
    assert a[ind == 1].mean() > 0.8 and a[ind == 0].mean() < 0.2, (a[ind == 1].mean(), a[ind == 0].mean())
    assert a.min() >= 0 and a.max() <= 1


def _blur(x, sigma):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x.astype(np.float64), (0, 0, sigma, sigma), mode="reflect")


def test_extremal_preserves_the_score_with_the_region():
    model, ind = texture_model()
    x = texture_images()
    ex = Explainer(model)
    sess = make_session(model)
    p0 = sess.run(None, {"x": x})[0][0, 0]
    p_blur = sess.run(None, {"x": _blur(x, 2).astype(np.float32)})[0][0, 0]
    area = float(ind.mean())
    r = ex.run(x, "extremal_perturbation", target=0, iterations=100, mask_size=8, blur=2, area=area)
    a = r.attribution[0, 0]
    np.testing.assert_allclose(a, r.outputs["mask"][0, 0])
    assert p_blur < 0.1 and r.outputs["perturbed_score"][0] > 0.8 * p0
    assert a[ind == 1].mean() > 0.7 and a[ind == 0].mean() < 0.1, (a[ind == 1].mean(), a[ind == 0].mean())
    # the area constraint: about a fraction `area` of the image kept
    assert abs(a.mean() - area) < 0.05


@pytest.mark.parametrize("method", ["meaningful_perturbation", "extremal_perturbation"])
@pytest.mark.parametrize("score", ["softmax", "logit"])
def test_mask_gradient_matches_finite_differences(method, score):
    model, _ = texture_model(gain=4.0, bias=0.0)
    x = texture_images(2, seed=1)
    ex = Explainer(model)
    chosen = np.array([0, 1])
    # the area term's kinks (sort) are checked on their own below, with a tiny step
    pr = Problem(
        ex, x, chosen, method, mask_size=(3, 4), blur=2, l1=0.05, tv=0.3, area=0.3, area_weight=0.0, score=score
    )
    rng = np.random.default_rng(3)
    m = rng.uniform(0.2, 0.8, size=(2, 3, 4))
    loss, grad, _ = pr.loss_and_grad(m)
    assert loss.shape == (2,) and grad.shape == m.shape
    eps = 1e-2
    fd = np.zeros_like(m)
    for idx in np.ndindex(*m.shape[1:]):
        for s in (1, -1):
            mm = m.copy()
            mm[(slice(None),) + idx] += s * eps
            fd[(slice(None),) + idx] += s * pr.loss_and_grad(mm)[0] / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-4 * np.abs(fd).max())
    # the regulariser alone (float64, no model): L1 + TV, or the sorted area penalty
    pr.lam = 2.0
    big = pr.up(m)
    _, gm, gb = pr.regulariser(m, big)
    fdr = np.zeros_like(m)
    for idx in np.ndindex(*m.shape[1:]):
        for s in (1, -1):
            mm = m.copy()
            mm[(slice(None),) + idx] += s * 1e-7
            fdr[(slice(None),) + idx] += s * pr.regulariser(mm, pr.up(mm))[0] / 2e-7
    total = gm + (pr.down(gb) if gb is not None else 0)
    np.testing.assert_allclose(total, fdr, rtol=1e-5, atol=1e-8)
    # the upsampling's adjoint is exact
    g = rng.normal(size=(2, SIZE, SIZE))
    np.testing.assert_allclose((pr.up(m) * g).sum(), (m * pr.down(g)).sum())


def test_seeds_batching_and_fixed_batch_one():
    model, _ = texture_model()
    x = texture_images(2, seed=4)
    kw = dict(target=0, iterations=20, mask_size=8, blur=2, jitter=2)
    ex = Explainer(model)
    a = ex.explain(x, "meaningful_perturbation", seed=1, **kw)
    b = Explainer(model).explain(x, "meaningful_perturbation", seed=1, **kw)
    c = ex.explain(x, "meaningful_perturbation", seed=2, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a fixed-batch-1 model gives the same masks (items are optimised independently)
    kw["jitter"] = 0
    for method in ("meaningful_perturbation", "extremal_perturbation"):
        full = ex.explain(x, method, **kw)
        one = Explainer(texture_model(batch=1)[0]).explain(x, method, **kw)
        np.testing.assert_allclose(one, full, atol=1e-5)
        single = ex.explain(x[1:], method, **kw)
        np.testing.assert_allclose(single, full[1:], atol=1e-5)


def test_errors():
    model, _ = texture_model()
    ex = Explainer(model)
    x = texture_images()
    with pytest.raises(OnnxplainError, match="meaningful_perturbation does not take 'window'"):
        ex.run(x, "meaningful_perturbation", window=3)
    with pytest.raises(OnnxplainError, match="area"):
        ex.run(x, "extremal_perturbation", area=1.5, iterations=1)
    with pytest.raises(
        OnnxplainError, match="target_weights must have the explained output's shape"
    ):  # weights are taken (targets)
        ex.run(x, "meaningful_perturbation", target_weights=np.ones((1, 7), np.float32), iterations=1)


def test_cli(tmp_path):
    import onnx
    from typer.testing import CliRunner

    from onnxplain.cli import app

    model, _ = texture_model()
    mp = tmp_path / "m.onnx"
    onnx.save_model(model, str(mp))
    x = texture_images()
    np.save(tmp_path / "a.npy", x[0])
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "explain",
            str(mp),
            str(tmp_path / "a.npy"),
            "-m",
            "meaningful_perturbation",
            "-m",
            "extremal_perturbation",
            "--iterations",
            "10",
            "--area",
            "0.2",
            "--blur",
            "3",
            "-d",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    ex = Explainer(model)
    np.testing.assert_array_equal(
        np.load(out / "a.meaningful_perturbation.npy"),
        ex.explain(x, "meaningful_perturbation", iterations=10, blur=3)[0],
    )
    np.testing.assert_array_equal(
        np.load(out / "a.extremal_perturbation.npy"),
        ex.explain(x, "extremal_perturbation", iterations=10, blur=3, area=0.2)[0],
    )
    r = CliRunner().invoke(app, ["export", str(mp), "-m", "meaningful_perturbation", "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code != 0
