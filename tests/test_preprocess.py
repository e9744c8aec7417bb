"""Preprocessing: presets give the documented numbers; layout, BGR, resize and inversion."""

import numpy as np
import pytest
from PIL import Image

from onnxplain.errors import OnnxplainError
from onnxplain.io import preprocess as pp

PIXEL = np.array([255, 0, 51], dtype=np.uint8)  # R, G, B


def flat_image(h=4, w=5, pixel=PIXEL):
    return np.broadcast_to(pixel, (h, w, 3)).copy()


def channel_values(x, layout="NCHW"):
    """The per-channel constant of a flat image's tensor, in tensor channel order."""
    c = x[:, 0, 0] if layout == "NCHW" else x[0, 0, :]
    return np.asarray(c, dtype=np.float64)


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("raw01", [1.0, 0.0, 0.2]),
        ("imagenet", [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]),
        ("caffe", [51 - 103.939, 0 - 116.779, 255 - 123.68]),  # BGR order, 0..255, no std
        ("tf", [1.0, -1.0, 51 / 127.5 - 1]),
    ],
)
def test_presets_documented_numbers(preset, expected):
    p = pp.for_model(pp.resolve(preset), ["N", 3, 4, 5])
    x = pp.to_tensor(flat_image(), p)
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(channel_values(x), expected, rtol=1e-5, atol=1e-5)


def test_default_is_raw01_and_ranges():
    assert pp.resolve(None) == pp.PRESETS["raw01"]
    r = np.random.default_rng(0)
    img = r.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img[0, 0] = 0
    img[0, 1] = 255
    for preset, lo, hi in (("raw01", 0, 1), ("tf", -1, 1)):
        x = pp.to_tensor(img, pp.for_model(pp.resolve(preset), [1, 3, 6, 6]))
        assert x.min() == pytest.approx(lo) and x.max() == pytest.approx(hi)


def test_explicit_options_override_preset():
    p = pp.resolve(
        "imagenet", mean="0.5 0.5 0.5", std="0.25,0.25,0.25", scale="1/255", bgr=True, layout="nhwc", size="32 48"
    )
    assert p.mean == (0.5, 0.5, 0.5) and p.std == (0.25,) * 3 and p.bgr and p.layout == "NHWC"
    assert p.size == (32, 48) and p.scale == pytest.approx(1 / 255)
    assert pp.resolve("caffe", bgr=False).bgr is False


def test_layout_inference():
    assert pp.infer_layout(["N", 3, 224, 224]) == "NCHW"
    assert pp.infer_layout([1, 1, 28, 28]) == "NCHW"
    assert pp.infer_layout(["N", 224, 224, 3]) == "NHWC"
    assert pp.infer_layout([1, 28, 28, 1]) == "NHWC"
    assert pp.infer_layout([1, 5, 7, 7]) is None
    assert pp.infer_layout([1, 3]) is None
    with pytest.raises(OnnxplainError, match="--layout"):
        pp.for_model(pp.resolve(), [1, 5, 7, 7])
    with pytest.raises(OnnxplainError, match="rank"):
        pp.for_model(pp.resolve(), ["N", 10])


def test_nchw_and_nhwc_hold_the_same_numbers():
    img = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    a = pp.to_tensor(img, pp.for_model(pp.resolve("imagenet"), [1, 3, 4, 5]))
    b = pp.to_tensor(img, pp.for_model(pp.resolve("imagenet"), [1, 4, 5, 3]))
    assert a.shape == (3, 4, 5) and b.shape == (4, 5, 3)
    np.testing.assert_array_equal(a, b.transpose(2, 0, 1))


def test_bgr_swaps_channels():
    img = flat_image()
    rgb = pp.to_tensor(img, pp.for_model(pp.resolve(), [1, 3, 4, 5]))
    bgr = pp.to_tensor(img, pp.for_model(pp.resolve(bgr=True), [1, 3, 4, 5]))
    np.testing.assert_allclose(channel_values(bgr), channel_values(rgb)[::-1])
    nhwc = pp.to_tensor(img, pp.for_model(pp.resolve(bgr=True), [1, 4, 5, 3]))
    np.testing.assert_allclose(channel_values(nhwc, "NHWC"), [0.2, 0.0, 1.0])


def test_size_from_model_and_override():
    assert pp.for_model(pp.resolve(), ["N", 3, 32, 48]).size == (32, 48)
    assert pp.for_model(pp.resolve(), ["N", 32, 48, 3]).size == (32, 48)
    assert pp.for_model(pp.resolve(), ["N", 3, "H", "W"]).size is None  # dynamic: keep the image's size
    assert pp.for_model(pp.resolve(size="16"), ["N", 3, "H", "W"]).size == (16, 16)
    assert pp.parse_size("160x224") == (160, 224)
    assert pp.parse_size("160 224") == (160, 224)
    assert pp.parse_size("160,224") == (160, 224)
    for bad in ("0", "a", "1 2 3", "-4"):
        with pytest.raises(OnnxplainError):
            pp.parse_size(bad)


def test_resize_and_load_items(tmp_path):
    r = np.random.default_rng(2)
    Image.fromarray(r.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    Image.fromarray(r.integers(0, 256, (10, 10), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    Image.fromarray(r.integers(0, 256, (10, 12, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "alpha.png")
    p = pp.for_model(pp.resolve(), ["N", 3, 8, 6])
    items = pp.load_items([tmp_path / n for n in ("cat.png", "grey.png", "alpha.png")], p, ["N", 3, 8, 6])
    for it in items:
        assert it.tensor.shape == (3, 8, 6) and it.display.shape == (8, 6, 3) and it.display.dtype == np.uint8
        np.testing.assert_allclose(it.tensor, it.display.transpose(2, 0, 1) / 255, atol=1e-6)
    # dynamic model size + --size H W
    p = pp.for_model(pp.resolve(size="16 12"), ["N", 3, "H", "W"])
    (item,) = pp.load_items([tmp_path / "cat.png"], p, ["N", 3, "H", "W"])
    assert item.tensor.shape == (3, 16, 12)
    # one-channel model: luma
    p = pp.for_model(pp.resolve(), [1, 1, 10, 10])
    (item,) = pp.load_items([tmp_path / "grey.png"], p, [1, 1, 10, 10])
    assert item.tensor.shape == (1, 10, 10)


def test_npy_items_and_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "x.npy", np.zeros((3, 4, 4), np.float32))
    np.save(tmp_path / "b" / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    np.save(tmp_path / "many.npy", np.zeros((3, 3, 4, 4), np.float32))
    shape = ["N", 3, 4, 4]
    p = pp.for_model(pp.resolve(), shape)
    items = pp.load_items([tmp_path / "a" / "x.npy", tmp_path / "b" / "x.npy", tmp_path / "many.npy"], p, shape)
    assert [it.name for it in items] == ["x", "x-1", "many_0", "many_1", "many_2"]
    assert all(it.tensor.shape == (3, 4, 4) for it in items)
    np.save(tmp_path / "bad.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(OnnxplainError, match="does not fit"):
        pp.load_items([tmp_path / "bad.npy"], p, shape)
    np.save(tmp_path / "int.npy", np.zeros((3, 4, 4), np.int64))
    with pytest.raises(OnnxplainError, match="float"):
        pp.load_items([tmp_path / "int.npy"], p, shape)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(OnnxplainError, match="cannot read"):
        pp.load_items([tmp_path / "junk.npy"], p, shape)


@pytest.mark.parametrize("preset", sorted(pp.PRESETS))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_display_inverts_preprocessing(preset, layout):
    img = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    shape = [1, 3, 5, 7] if layout == "NCHW" else [1, 5, 7, 3]
    p = pp.for_model(pp.resolve(preset), shape)
    back = pp.to_display(pp.to_tensor(img, p), p)
    assert back.dtype == np.uint8 and back.shape == img.shape
    assert np.abs(back.astype(int) - img.astype(int)).max() <= 1


def test_bad_images_and_numbers(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(OnnxplainError, match="cannot read image"):
        pp.load_image(tmp_path / "x.png")
    with pytest.raises(OnnxplainError, match="no such file"):
        pp.load_image(tmp_path / "missing.png")
    assert pp.parse_number("1/255", "--scale") == pytest.approx(1 / 255)
    with pytest.raises(OnnxplainError, match="--scale"):
        pp.parse_number("one", "--scale")
    with pytest.raises(OnnxplainError, match="non-zero"):
        pp.to_tensor(flat_image(), pp.for_model(pp.resolve(std="1 0 1"), [1, 3, 4, 5]))
