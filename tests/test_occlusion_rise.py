"""Occlusion and RISE: occlusion equals a direct unbatched loop; RISE finds a model's only region."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import tiny_cnn
from onnxplain.errors import OnnxplainError
from onnxplain.methods import occlusion as occ
from onnxplain.methods.rise import Masks
from onnxplain.runtime.explainer import Explainer
from onnxplain.runtime.session import make_session


def _occlusion_loop(model, x, target, window, stride, fill):
    """Zeiler & Fergus directly: one onnxruntime run per occluded copy, windows as documented."""
    sess = make_session(model)
    h, w = x.shape[-2:]
    ys, xs = occ.starts(h, window, stride), occ.starts(w, window, stride)
    out = []
    for xi in x:
        f = sess.run(None, {"x": xi[None]})[0][0].astype(np.float64)
        t = int(f.argmax()) if target < 0 else target
        total, count = np.zeros((h, w)), np.zeros((h, w))
        for y0 in ys:
            for x0 in xs:
                xo = xi.copy()
                xo[:, y0 : y0 + window, x0 : x0 + window] = fill
                s = sess.run(None, {"x": xo[None]})[0][0].astype(np.float64)[t]
                total[y0 : y0 + window, x0 : x0 + window] += f[t] - s
                count[y0 : y0 + window, x0 : x0 + window] += 1
        out.append((total / count)[None])
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("batch", ["N", 1])
@pytest.mark.parametrize("window,stride", [(3, 2), (4, 4), (5, 3), (8, 1)])
def test_occlusion_equals_unbatched_loop(batch, window, stride):
    x = np.random.default_rng(0).normal(size=(2 if batch == "N" else 1, 3, 8, 8)).astype(np.float32)
    ex = Explainer(tiny_cnn(batch=batch))
    for target in (-1, 3):
        res = ex.run(x, "occlusion", target=target, window=window, stride=stride, fill=0.5, score="logit")
        assert res.attribution.shape == (len(x), 1, 8, 8)
        ref = _occlusion_loop(tiny_cnn(batch=batch, softmax=False), x, target, window, stride, 0.5)
        np.testing.assert_array_equal(res.attribution, ref)


def test_occlusion_borders_softmax_blur_and_errors():
    assert occ.starts(8, 3, 2) == [0, 2, 4, 5]
    assert occ.starts(8, 4, 4) == [0, 4]
    assert occ.starts(8, 10, 3) == [0]
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    ex = Explainer(tiny_cnn())
    calls = []
    a = ex.explain(x, "occlusion", window=4, stride=2, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (9, 9)
    p = make_session(tiny_cnn()).run(None, {"x": x})[0][0]
    t = int(p.argmax())
    xo = x.copy()
    xo[..., :4, :4] = 0
    drop = p[t] - make_session(tiny_cnn()).run(None, {"x": xo})[0][0][t]
    assert a[0, 0, 0, 0] == pytest.approx(drop, rel=1e-5, abs=1e-7)  # one window covers the corner
    blurred = ex.explain(x, "occlusion", window=4, stride=4, blur=1.0)
    assert blurred.shape == (1, 1, 8, 8) and np.all(np.isfinite(blurred))
    mean = ex.explain(x, "occlusion", window=4, stride=4, fill="mean")
    assert not np.array_equal(mean, blurred)
    with pytest.raises(OnnxplainError):
        ex.explain(x, "occlusion", window=0)
    with pytest.raises(OnnxplainError):
        ex.explain(x, "occlusion", bogus=1)


def region_model(size=16, region=(4, 10, 6, 12)):
    """logit[N, 1] = mean of channel 0 over rows y0:y1, columns x0:x1 (a fixed 0/1 weight map)."""
    y0, y1, x0, x1 = region
    wmap = np.zeros((1, size * size * 2), dtype=np.float32)
    ind = np.zeros((2, size, size), dtype=np.float32)
    ind[0, y0:y1, x0:x1] = 1
    wmap[0] = ind.ravel() / ind.sum()
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W"], ["logit"], transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "region",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, size, size])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(wmap, "W")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), ind[0]


def test_rise_finds_the_region_and_converges():
    model, ind = region_model()
    ex = Explainer(model)
    x = np.ones((1, 2, 16, 16), dtype=np.float32)
    # the model is linear, so RISE's limit is E[M M^T] w / p: the region blurred by the masks' own
    # correlation; estimated here from many masks of another seed, in numpy
    m = Masks(20000, (16, 16), cells=4, p=0.5, seed=123)[0:20000].reshape(20000, -1)
    limit = (m.T @ (m @ (ind.ravel() / ind.sum()))) / (20000 * 0.5)
    corr, corr_limit = [], []
    for n in (50, 400, 3000):
        s = ex.explain(x, "rise", target=0, n_masks=n, cells=4, p=0.5, seed=0, score="logit")[0, 0]
        assert s.shape == (16, 16)
        corr.append(np.corrcoef(s.ravel(), ind.ravel())[0, 1])
        corr_limit.append(np.corrcoef(s.ravel(), limit)[0, 1])
    assert corr[0] < corr[1] < corr[2] and corr[2] > 0.7, corr
    assert corr_limit[0] < corr_limit[1] < corr_limit[2] and corr_limit[2] > 0.97, corr_limit
    # inside the region well above outside (the mean mask alone gives E[f] * E[M] / p everywhere)
    assert s[ind == 1].mean() - s[ind == 0].mean() > 0.07 and ind.ravel()[s.argmax()] == 1


def test_rise_seeds_masks_and_batching():
    model, _ = region_model()
    ex = Explainer(model)
    x = np.random.default_rng(2).random((2, 2, 16, 16), dtype=np.float32)
    a = ex.explain(x, "rise", target=0, n_masks=300, cells=4, seed=7, score="logit")
    b = Explainer(model).explain(x, "rise", target=0, n_masks=300, cells=4, seed=7, score="logit")
    c = ex.explain(x, "rise", target=0, n_masks=300, cells=4, seed=8, score="logit")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    m = Masks(300, (16, 16), cells=4, p=0.5, seed=7)[0:300]
    assert m.min() >= 0 and m.max() <= 1 and abs(m.mean() - 0.5) < 0.05
    # the saliency is sum_i score_i mask_i / (N p), scores from single runs
    sess = make_session(model)
    s = np.array([sess.run(None, {"x": (x[1:2] * mi).astype(np.float32)})[0][0, 0] for mi in m], dtype=np.float64)
    np.testing.assert_allclose(a[1, 0], np.tensordot(s, m, axes=1) / (300 * 0.5), rtol=1e-5, atol=1e-6)


def test_cli_occlusion_and_rise(tmp_path):
    import onnx
    from typer.testing import CliRunner

    from onnxplain.cli import app

    mp = tmp_path / "m.onnx"
    onnx.save_model(tiny_cnn(), str(mp))
    x = np.random.default_rng(3).random((1, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "a.npy", x[0])
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "explain",
            str(mp),
            str(tmp_path / "a.npy"),
            "-m",
            "occlusion",
            "--window",
            "4",
            "--stride",
            "2",
            "--fill",
            "0.25",
            "-m",
            "rise",
            "--n-masks",
            "64",
            "--cells",
            "3",
            "--seed",
            "5",
            "-d",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    ex = Explainer(tiny_cnn())
    np.testing.assert_array_equal(
        np.load(out / "a.occlusion.npy"), ex.explain(x, "occlusion", window=4, stride=2, fill=0.25)[0]
    )
    np.testing.assert_array_equal(np.load(out / "a.rise.npy"), ex.explain(x, "rise", n_masks=64, cells=3, seed=5)[0])
    r = CliRunner().invoke(app, ["export", str(mp), "-m", "occlusion", "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code != 0
