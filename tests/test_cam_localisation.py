"""CAMs point at the object: a pointing game on the demo model and its ground-truth masks.

100 held-out images (``make_shapes(100, seed=12345)``, a seed training never used). A map hits
when its argmax pixel lies inside the object's mask dilated by 3 px; the baseline always points
at the image centre. Each CAM explains the true class.
"""

import os

import numpy as np
import pytest

from onnxplain import Explainer
from onnxplain.io.shapes_data import make_shapes

MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "demo", "shapes_cnn.onnx")
N, SEED, DILATE = 100, 12345, 3


def dilate(masks: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation of [N, H, W] masks by a disc of radius r."""
    out = masks.copy()
    h, w = masks.shape[1:]
    pad = np.pad(masks, ((0, 0), (r, r), (r, r)))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out |= pad[:, r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def pointing_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each map's argmax pixel (first one on ties) is inside its mask."""
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    ys, xs = np.unravel_index(flat, maps.shape[-2:])
    return masks[np.arange(len(maps)), ys, xs]


@pytest.fixture(scope="module")
def data():
    images, labels, masks = make_shapes(N, seed=SEED)
    return Explainer(MODEL), images, labels, dilate(masks, DILATE)


def centre_rate(masks):
    h, w = masks.shape[1:]
    return float(masks[:, h // 2, w // 2].mean())


def _methods():
    return ["gradcam", "scorecam", "ablationcam"]


@pytest.mark.parametrize("method", _methods())
def test_cam_beats_centre_baseline(method, data):
    ex, images, labels, masks = data
    a = ex.explain(images, method, target=labels, batch_size=64)
    assert a.shape == (N, 1, 64, 64)
    rate = float(pointing_hits(a[:, 0], masks).mean())
    base = centre_rate(masks)
    print(f"\npointing game {method}: {rate:.2f} (centre baseline {base:.2f}, n={N})")
    assert rate > base + 0.2, (rate, base)
    assert rate >= 0.6


def test_pointing_helpers():
    m = np.zeros((1, 9, 9), dtype=bool)
    m[0, 4, 4] = True
    d = dilate(m, 1)
    assert d.sum() == 5 and d[0, 3, 4] and d[0, 4, 5] and not d[0, 3, 3]
    maps = np.zeros((2, 9, 9))
    maps[0, 4, 5], maps[1, 0, 0] = 1, 1
    assert pointing_hits(maps, np.repeat(d, 2, 0)).tolist() == [True, False]
