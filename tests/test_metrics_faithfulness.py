"""Faithfulness metrics (region perturbation / AOPC, deletion / insertion) on linear models whose
true relevance is known; expected curves come from slow per-step loops written here in numpy."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.ndimage import gaussian_filter

from models import tiny_cnn
from onnxplain.errors import OnnxplainError
from onnxplain.evaluation.metrics.faithfulness import Curve, aopc, deletion, insertion, region_perturbation
from onnxplain.runtime.driver import Driver


def linear_model(w: np.ndarray, softmax: bool = False) -> onnx.ModelProto:
    """logits[n, k] = sum(w[k] * x[n]) for x [N, C, H, W], w [K, C, H, W]."""
    k, c, h, ww = w.shape
    inits = [
        numpy_helper.from_array(w.reshape(k, -1).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([-1, c * h * ww], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1, name="fc"),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"))
        out = "prob"
    g = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, ww])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", k])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def softmax_at(z, t):
    e = np.exp(z - z.max())
    return e[t] / e.sum()


# ---- fixtures: a model that reads one region --------------------------------------------------------
H = W = 8
REGION = np.zeros((H, W), bool)
REGION[2:6, 4:8] = True  # four 2x2 tiles: (1,2), (1,3), (2,2), (2,3) in the 4x4 tile grid


@pytest.fixture(scope="module")
def region_drv():
    w = np.zeros((2, 3, H, W))
    w[0][:, REGION] = 1.0  # class 0 = sum of x over the region, all channels
    w[1] = 0.1  # class 1 = 0.1 * sum(x)
    return Driver(linear_model(w))


@pytest.fixture(scope="module")
def region_x():
    return np.random.default_rng(0).uniform(0.5, 1.0, size=(2, 3, H, W)).astype(np.float32)


# ---- Curve / AOPC by hand ---------------------------------------------------------------------------
def test_auc_and_aopc_by_hand():
    c = Curve(fraction=np.array([0.0, 0.5, 1.0]), scores=np.array([[3.0, 1.0, 0.0], [2.0, 2.0, 2.0]]))
    # trapezoids: 0.5 * (3 + 1) / 2 + 0.5 * (1 + 0) / 2 = 1.25; a flat curve at 2 -> 2
    np.testing.assert_allclose(c.auc(), [1.25, 2.0])
    # AOPC = ((3-3) + (3-1) + (3-0)) / 3 = 5/3; flat -> 0
    np.testing.assert_allclose(aopc(c), [5 / 3, 0.0])


# ---- region perturbation ----------------------------------------------------------------------------
def test_perfect_heatmap_has_top_morf_aopc(region_drv, region_x):
    t = np.zeros(2, np.int64)
    perfect = np.broadcast_to(REGION.astype(float), (2, H, W))
    rand = np.random.default_rng(1).uniform(size=(2, H, W))
    kw = dict(region=2, fill=0.0, order="morf")
    a_perfect = aopc(region_perturbation(region_drv, region_x, perfect, t, **kw))
    a_rand = aopc(region_perturbation(region_drv, region_x, rand, t, **kw))
    a_inv = aopc(region_perturbation(region_drv, region_x, 1 - perfect, t, **kw))
    assert np.all(a_perfect > a_rand) and np.all(a_rand > a_inv)
    assert np.all(a_inv >= 0)


def test_perfect_heatmap_lerf_flat_then_region_by_hand(region_drv, region_x):
    t = np.zeros(2, np.int64)
    perfect = np.broadcast_to(REGION.astype(float), (2, H, W))
    c = region_perturbation(region_drv, region_x, perfect, t, region=2, order="lerf", fill=0.0)
    assert c.scores.shape == (2, 17)  # 16 tiles, one per step
    np.testing.assert_allclose(c.fraction, np.arange(17) / 16)
    for n in range(2):
        f0 = region_x[n][:, REGION].sum()
        # the 12 tiles outside the region go first (class 0 ignores them): flat at f(x)
        np.testing.assert_allclose(c.scores[n, :13], f0, rtol=1e-5)
        # then the region's tiles in raster order (equal relevance): (2:4,4:6), (2:4,6:8), (4:6,4:6), (4:6,6:8)
        tiles = [region_x[n][:, 2:4, 4:6], region_x[n][:, 2:4, 6:8], region_x[n][:, 4:6, 4:6], region_x[n][:, 4:6, 6:8]]
        expect = f0 - np.cumsum([tile.sum() for tile in tiles])
        np.testing.assert_allclose(c.scores[n, 13:], expect, rtol=1e-5, atol=1e-4)
        assert abs(c.scores[n, -1]) < 1e-4


def slow_flip(w, x, order_pixels, fill):
    """f after flipping the first k pixels of ``order_pixels`` (flat h*W+w indices), k = 0..P."""
    xs, out = x.copy(), [float((w * x).sum())]
    for p in order_pixels:
        hh, ww = divmod(int(p), x.shape[2])
        xs[:, hh, ww] = fill[:, hh, ww]
        out.append(float((w * xs).sum()))
    return np.array(out)


def test_pixel_flipping_matches_slow_loop_and_aopc_formula():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(1, 2, 6, 6))
    x = rng.normal(size=(3, 2, 6, 6)).astype(np.float32)
    heat = rng.normal(size=(3, 6, 6))
    drv = Driver(linear_model(w))
    c = region_perturbation(drv, x, heat, np.zeros(3, np.int64), region=1, order="morf", fill=0.0)
    assert c.scores.shape == (3, 37)
    lerf = region_perturbation(drv, x, heat, np.zeros(3, np.int64), region=1, order="lerf", fill=0.0)
    for n in range(3):
        flat = heat[n].ravel()
        morf_order = sorted(range(36), key=lambda p: -flat[p])
        lerf_order = sorted(range(36), key=lambda p: flat[p])
        zero = np.zeros_like(x[n])
        expect = slow_flip(w[0], x[n].astype(np.float64), morf_order, zero)
        np.testing.assert_allclose(c.scores[n], expect, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            lerf.scores[n], slow_flip(w[0], x[n].astype(np.float64), lerf_order, zero), rtol=1e-4, atol=1e-4
        )
        aopc_loop = sum(expect[0] - expect[k] for k in range(37)) / 37
        assert aopc(c)[n] == pytest.approx(aopc_loop, rel=1e-4, abs=1e-4)


def random_linear_case(seed):
    """A random linear model on [2, 1, 6, 6] inputs, a random heatmap, and its full pixel-flipping curve."""
    rng = np.random.default_rng(seed)
    drv = Driver(linear_model(rng.normal(size=(1, 1, 6, 6))))
    x = rng.normal(size=(2, 1, 6, 6)).astype(np.float32)
    heat = rng.normal(size=(2, 6, 6))
    t = np.zeros(2, np.int64)
    return drv, x, heat, t, region_perturbation(drv, x, heat, t, region=1, fill=0.0)


def test_fewer_steps_sample_the_full_curve():
    drv, x, heat, t, full = random_linear_case(3)
    part = region_perturbation(drv, x, heat, t, region=1, fill=0.0, steps=5)
    assert part.scores.shape == (2, 6) and part.fraction[0] == 0 and part.fraction[-1] == 1
    idx = part.fraction * 36
    np.testing.assert_allclose(idx, np.round(idx))  # whole pixels per step
    assert np.all(np.diff(idx) >= 7)  # several pixels per step
    np.testing.assert_allclose(part.scores, full.scores[:, np.round(idx).astype(int)], rtol=1e-6)


def test_fraction_stops_the_curve_early():
    drv, x, heat, t, full = random_linear_case(4)
    part = region_perturbation(drv, x, heat, t, region=1, fill=0.0, fraction=0.25)  # 9 of 36 pixels
    np.testing.assert_allclose(part.fraction, np.arange(10) / 36)
    np.testing.assert_allclose(part.scores, full.scores[:, :10], rtol=1e-6)
    assert aopc(part) == pytest.approx(np.mean(full.scores[:, :1] - full.scores[:, :10], axis=1))
    with pytest.raises(OnnxplainError, match="fraction"):
        region_perturbation(drv, x, heat, t, fraction=0.0)


def test_default_steps_capped_at_64():
    drv = Driver(linear_model(np.ones((1, 1, 10, 10))))
    x = np.ones((1, 1, 10, 10), np.float32)
    c = region_perturbation(drv, x, np.zeros((1, 10, 10)), [0], region=1, fill=0.0)
    assert c.scores.shape == (1, 65)
    # constant heatmap, f = sum(x) = 100, fill 0: pixel counts removed after each step
    removed = np.round(c.fraction * 100)
    np.testing.assert_allclose(c.scores[0], 100 - removed, atol=1e-4)


def test_border_regions_and_raster_tie_breaking():
    # 5x5 image, 2x2 regions -> 3x3 tiles of 4,4,2 / 4,4,2 / 2,2,1 pixels, f = sum(x), x = 1, two channels
    drv = Driver(linear_model(np.ones((1, 2, 5, 5))))
    x = np.ones((1, 2, 5, 5), np.float32)
    raster = [4, 4, 2, 4, 4, 2, 2, 2, 1]
    by_sum = [4, 4, 4, 4, 2, 2, 2, 2, 1]  # heatmap 0.3 everywhere: tile sums 1.2, 0.6 (borders), 0.3 (corner)
    cases = [
        (0.0, "morf", raster),
        (0.0, "lerf", raster),
        (0.3, "morf", by_sum),
        (0.3, "lerf", by_sum[::-1]),
        (-0.3, "lerf", by_sum),
    ]
    for value, order, sizes in cases:
        c = region_perturbation(drv, x, np.full((1, 5, 5), value), [0], region=2, order=order, fill=0.0)
        expect = 50 - 2 * np.concatenate([[0], np.cumsum(sizes)])
        np.testing.assert_allclose(c.scores[0], expect, atol=1e-4, err_msg=f"{value} {order}")


def test_region_larger_than_image_is_one_region():
    drv = Driver(linear_model(np.ones((1, 1, 4, 4))))
    x = np.ones((1, 1, 4, 4), np.float32)
    c = region_perturbation(drv, x, np.zeros((1, 4, 4)), [0], region=9, fill=0.0)
    np.testing.assert_allclose(c.fraction, [0, 1])
    np.testing.assert_allclose(c.scores, [[16, 0]], atol=1e-5)


def test_mean_fill_ends_at_the_mean_image():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(1, 3, 4, 4))
    x = rng.uniform(size=(2, 3, 4, 4)).astype(np.float32)
    drv = Driver(linear_model(w))
    c = region_perturbation(drv, x, rng.normal(size=(2, 4, 4)), [0, 0], region=2, fill="mean")
    for n in range(2):
        means = x[n].astype(np.float64).reshape(3, -1).mean(axis=1)
        assert c.scores[n, -1] == pytest.approx(sum(means[ch] * w[0, ch].sum() for ch in range(3)), abs=1e-4)


def test_uniform_fill_seeded_and_in_range():
    w = np.zeros((1, 1, 4, 4))
    w[0, 0, 0, 0] = 1.0  # f reads pixel (0, 0) only
    drv = Driver(linear_model(w))
    x = np.linspace(-2, 3, 32, dtype=np.float32).reshape(2, 1, 4, 4)
    heat = np.zeros((2, 4, 4))
    heat[:, 0, 0] = 1.0
    run = lambda seed: region_perturbation(drv, x, heat, [0, 0], region=1, fill="uniform", seed=seed)
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores[:, 1:], c.scores[:, 1:])
    # after step 1 pixel (0,0) holds a U[min(x_n), max(x_n)] draw, not its old value
    for n in range(2):
        v = a.scores[n, 1]
        assert x[n].min() <= v <= x[n].max() and v != pytest.approx(float(x[n, 0, 0, 0]))
        np.testing.assert_allclose(a.scores[n, 1:], v)


def test_batching_invariance_on_a_cnn():
    drv = Driver(tiny_cnn())
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(3, 3, 8, 8)).astype(np.float32)
    heat = rng.normal(size=(3, 8, 8))
    t = np.array([0, 3, 1])
    for f in (
        lambda **k: region_perturbation(drv, x, heat, t, region=3, fill="uniform", score="softmax", **k),
        lambda **k: deletion(drv, x, heat, t, steps=10, **k),
        lambda **k: insertion(drv, x, heat, t, steps=10, **k),
    ):
        big, one = f(batch_size=64), f(batch_size=1)
        np.testing.assert_array_equal(big.fraction, one.fraction)
        np.testing.assert_allclose(big.scores, one.scores, rtol=1e-6, atol=1e-7)


def test_steps_beyond_units_and_no_images():
    drv = Driver(linear_model(np.ones((1, 1, 4, 4))))
    x = np.ones((1, 1, 4, 4), np.float32)
    c = deletion(drv, x, np.zeros((1, 4, 4)), [0], steps=1000, score="logit")  # at most one step per pixel
    np.testing.assert_allclose(c.scores[0], 16 - np.arange(17), atol=1e-5)
    empty = region_perturbation(drv, np.ones((0, 1, 4, 4), np.float32), np.zeros((0, 4, 4)), [], region=2)
    assert empty.scores.shape == (0, 5) and aopc(empty).shape == (0,) and empty.auc().shape == (0,)


def test_progress_counts_rows():
    drv = Driver(linear_model(np.ones((1, 1, 4, 4))))
    seen = []
    region_perturbation(
        drv,
        np.ones((2, 1, 4, 4), np.float32),
        np.zeros((2, 4, 4)),
        [0, 0],
        region=2,
        fill=0.0,
        batch_size=3,
        progress=lambda d, tot: seen.append((d, tot)),
    )
    assert seen[-1] == (10, 10) and seen[0] == (3, 10)  # 2 images x (4 regions + 1)


# ---- deletion / insertion ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def binary_linear():
    rng = np.random.default_rng(6)
    w = np.zeros((2, 2, 6, 6))
    w[0] = rng.normal(size=(2, 6, 6))  # class 1's logit is 0: p0 = sigmoid(f0), monotone in f0
    x = rng.uniform(0, 1, size=(2, 2, 6, 6)).astype(np.float32)
    return w, x


def slow_petsiuk(w, x, heat, t, steps, base, insert):
    """Per step, the softmax of the linear logits with the first k pixels (by -heat, raster ties)
    deleted (set to base) or inserted (into base); k spaced evenly over 0..H*W in `steps` steps."""
    p = x.shape[1] * x.shape[2]
    order = sorted(range(p), key=lambda i: -heat.ravel()[i])
    out = []
    for s in range(steps + 1):
        k = s * p // steps
        img = base.copy() if insert else x.copy()
        for i in order[:k]:
            hh, ww = divmod(i, x.shape[2])
            img[:, hh, ww] = x[:, hh, ww] if insert else base[:, hh, ww]
        out.append(softmax_at(np.array([(w[c] * img).sum() for c in range(len(w))]), t))
    return np.array(out)


def trapezoid_loop(y, x):
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def test_deletion_insertion_match_slow_loop(binary_linear):
    w, x = binary_linear
    drv = Driver(linear_model(w, softmax=True))
    heat = np.random.default_rng(7).normal(size=(2, 6, 6))
    t = np.array([0, 1])
    d = deletion(drv, x, heat, t, steps=12)
    i = insertion(drv, x, heat, t, steps=12, baseline=0.25)
    np.testing.assert_allclose(d.fraction, np.arange(13) / 12)
    for n in range(2):
        xd = x[n].astype(np.float64)
        ed = slow_petsiuk(w, xd, heat[n], t[n], 12, np.zeros_like(xd), insert=False)
        ei = slow_petsiuk(w, xd, heat[n], t[n], 12, np.full_like(xd, 0.25), insert=True)
        np.testing.assert_allclose(d.scores[n], ed, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(i.scores[n], ei, rtol=1e-5, atol=1e-6)
        assert d.auc()[n] == pytest.approx(trapezoid_loop(ed, np.arange(13) / 12), rel=1e-5)
        assert i.auc()[n] == pytest.approx(trapezoid_loop(ei, np.arange(13) / 12), rel=1e-5)


def test_deletion_insertion_endpoints(binary_linear):
    w, x = binary_linear
    drv = Driver(linear_model(w, softmax=True))
    heat = np.random.default_rng(8).normal(size=(2, 6, 6))
    t = np.array([0, 0])
    d = deletion(drv, x, heat, t, steps=7, score="logit")
    i = insertion(drv, x, heat, t, steps=7, baseline=-1.0, score="logit")
    f_x = (w[0] * x).sum(axis=(1, 2, 3))
    for c in (d, i):
        assert c.fraction[0] == 0 and c.fraction[-1] == 1 and np.all(np.diff(c.fraction) > 0)
    np.testing.assert_allclose(d.scores[:, 0], f_x, rtol=1e-5)
    np.testing.assert_allclose(d.scores[:, -1], 0, atol=1e-5)
    np.testing.assert_allclose(i.scores[:, 0], -w[0].sum(), rtol=1e-5)
    np.testing.assert_allclose(i.scores[:, -1], f_x, rtol=1e-5)


def test_perfect_order_beats_reversed(binary_linear):
    w, x = binary_linear
    drv = Driver(linear_model(w, softmax=True))
    t = np.array([0, 0])
    contrib = (w[0] * x).sum(axis=1)  # the true per-pixel relevance of the linear model
    for steps in (36, 9):
        d_good = deletion(drv, x, contrib, t, steps=steps).auc()
        d_bad = deletion(drv, x, -contrib, t, steps=steps).auc()
        i_good = insertion(drv, x, contrib, t, steps=steps, baseline=0.0).auc()
        i_bad = insertion(drv, x, -contrib, t, steps=steps, baseline=0.0).auc()
        assert np.all(d_good < d_bad) and np.all(i_good > i_bad)


def test_blur_baseline():
    drv = Driver(linear_model(np.random.default_rng(9).normal(size=(2, 3, 20, 20))))
    # a constant image is its own blur: the insertion curve is flat
    x = np.full((1, 3, 20, 20), 0.7, np.float32)
    c = insertion(drv, x, np.random.default_rng(1).normal(size=(1, 20, 20)), [1], steps=5, score="logit")
    np.testing.assert_allclose(c.scores, c.scores[0, 0], rtol=1e-5)
    # otherwise it starts at f(Gaussian blur, sigma 5% of the side = 1 px, per channel)
    x = np.random.default_rng(2).uniform(size=(1, 3, 20, 20)).astype(np.float32)
    c = insertion(drv, x, np.zeros((1, 20, 20)), [1], steps=5, score="logit")
    blurred = np.stack([gaussian_filter(x[0, ch].astype(np.float64), 1.0, mode="nearest") for ch in range(3)])
    w1 = np.random.default_rng(9).normal(size=(2, 3, 20, 20))[1]
    assert c.scores[0, 0] == pytest.approx((w1 * blurred).sum(), rel=1e-4, abs=1e-4)
    assert c.scores[0, -1] == pytest.approx((w1 * x[0]).sum(), rel=1e-4, abs=1e-4)


# ---- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(order="best"), "order"),
        (dict(region=0), "region"),
        (dict(region=1.5), "region"),
        (dict(steps=0), "steps"),
        (dict(fill="noise"), "fill"),
        (dict(fill=np.zeros((5, 5))), "broadcast"),
        (dict(score="prob"), "score"),
    ],
)
def test_region_perturbation_bad_options(region_drv, region_x, kwargs, msg):
    with pytest.raises(OnnxplainError, match=msg):
        region_perturbation(region_drv, region_x, np.zeros((2, H, W)), [0, 0], **kwargs)


@pytest.mark.parametrize(
    "x_shape, heat_shape, target, msg",
    [
        ((2, 3, H, W), (2, H + 1, W), [0, 0], "heatmap"),
        ((2, 3, H, W), (2, 1, H, W), [0, 0], "heatmap"),
        ((3, H, W), (3, H, W), [0, 0, 0], "x must be"),
        ((2, 3, H, W), (2, H, W), [0], "target"),
        ((2, 3, H, W), (2, H, W), [0, -1], "target"),
        ((2, 3, H, W), (2, H, W), [0.5, 1.0], "target"),
        ((2, 3, H, W), (2, H, W), [0, 7], "target out of range"),
    ],
)
def test_bad_shapes_and_targets(region_drv, x_shape, heat_shape, target, msg):
    x, heat = np.ones(x_shape, np.float32), np.zeros(heat_shape)
    for f in (region_perturbation, deletion, insertion):
        with pytest.raises(OnnxplainError, match=msg):
            f(region_drv, x, heat, target)


def test_nan_heatmap_and_bad_baseline(region_drv, region_x):
    heat = np.zeros((2, H, W))
    heat[0, 1, 1] = np.nan
    with pytest.raises(OnnxplainError, match="non-finite"):
        deletion(region_drv, region_x, heat, [0, 0])
    with pytest.raises(OnnxplainError, match="baseline"):
        insertion(region_drv, region_x, np.zeros((2, H, W)), [0, 0], baseline="noise")
    with pytest.raises(OnnxplainError, match="steps"):
        deletion(region_drv, region_x, np.zeros((2, H, W)), [0, 0], steps=-3)
