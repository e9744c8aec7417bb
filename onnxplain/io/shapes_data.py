"""Synthetic "shapes in clutter" image task with known ground-truth evidence.

Every image holds exactly one *target* shape whose kind is the label, drawn
over a cluttered background.  The boolean mask marks exactly the target's
pixels, so an explanation of a classifier's decision can be scored against
the region that truly decides the label.

Only numpy and scikit-image are used.  Generation is deterministic: image
``i`` depends only on ``(seed, i, size)``, so ``make_shapes(10, seed)`` is a
prefix of ``make_shapes(100, seed)``.
"""

from __future__ import annotations

import numpy as np
from skimage.draw import disk, ellipse, line, polygon

__all__ = ["CLASS_NAMES", "boxes_of", "make_scenes", "make_shapes"]

#: Class names, indexed by label.
CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring")

# Target extent (diameter of the circumscribing circle) as a fraction of the
# image side; at size=64 this is 12..24 px.
_SCALE_RANGE = (12 / 64, 24 / 64)
# Minimum RGB distance between the target colour and the background under it.
_MIN_CONTRAST = 0.35
_N_DISTRACTORS = (3, 7)  # half-open range for the number of distractors


def make_shapes(n, seed=0, size=64, draw_target=True):
    """Generate ``n`` images of one shape in clutter.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed; the same ``(n, seed, size)`` always gives the same arrays.
    size : int
        Image side in pixels (the target spans roughly 19-38% of it).
    draw_target : bool
        If False, everything is generated exactly as with True (same random
        draws, same background, distractors and noise) but the target is not
        painted; ``labels`` and ``masks`` are still returned.  Comparing both
        outputs shows that the target changes the image only inside the mask.

    Returns
    -------
    images : float32 array [n, 3, size, size], values in [0, 1]
    labels : int64 array [n], indices into ``CLASS_NAMES``
    masks : bool array [n, size, size], True exactly on the target's pixels
    """
    n = int(n)
    size = int(size)
    if n < 0:
        raise ValueError("n must be >= 0")
    if size < 16:
        raise ValueError("size must be >= 16")
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        images[i], labels[i] = _make_one(rng, size, masks[i], draw_target)
    return images, labels, masks


def _make_one(rng, size, mask, draw_target):
    """Draw one image into a new array; fill ``mask`` in place."""
    img = _background(rng, size)
    for _ in range(rng.integers(*_N_DISTRACTORS)):
        _distractor(rng, img)

    label = int(rng.integers(len(CLASS_NAMES)))
    extent = rng.uniform(*_SCALE_RANGE) * size
    half = extent / 2
    cr = rng.uniform(half + 1, size - 1 - half)
    cc = rng.uniform(half + 1, size - 1 - half)
    angle = rng.uniform(0, 2 * np.pi)
    mask |= _shape_mask(CLASS_NAMES[label], cr, cc, half, angle, rng, size)

    under = img[:, mask].mean(axis=1)
    colour = rng.uniform(0, 1, 3)
    for _ in range(50):  # rejection sampling for contrast with the background
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
        colour = rng.uniform(0, 1, 3)
    if draw_target:
        img[:, mask] = colour[:, None]

    img += rng.normal(0.0, rng.uniform(0.02, 0.08), img.shape)
    np.clip(img, 0.0, 1.0, out=img)
    return img.astype(np.float32), label


def _background(rng, size):
    """Smooth random colour gradient with a gentle low-frequency wave."""
    c0, c1 = rng.uniform(0, 1, (2, 3))
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = np.cos(theta) * xx + np.sin(theta) * yy
    t = (t - t.min()) / (t.max() - t.min())
    freq = rng.uniform(0.5, 2.0)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.08 * np.sin(2 * np.pi * freq * (xx * np.sin(theta) - yy * np.cos(theta)) + phase)
    img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t + wave
    return np.clip(img, 0.0, 1.0)


def _distractor(rng, img):
    """Paint one clutter item that is not any of the class shapes.

    Items are thin (1-2 px) line segments, thin zig-zag strokes, and small
    elongated ellipses (aspect ratio >= 2), all in random colours.
    """
    size = img.shape[-1]
    colour = rng.uniform(0, 1, 3)[:, None]
    kind = rng.integers(3)
    if kind == 0:  # straight segment
        r0, c0 = rng.uniform(0, size - 1, 2)
        length = rng.uniform(0.1, 0.6) * size
        a = rng.uniform(0, 2 * np.pi)
        pts = [(r0, c0), (r0 + length * np.sin(a), c0 + length * np.cos(a))]
        rr, cc = _polyline(pts, int(rng.integers(1, 3)), size)
    elif kind == 1:  # zig-zag stroke
        r, c = rng.uniform(0, size - 1, 2)
        a = rng.uniform(0, 2 * np.pi)
        pts = [(r, c)]
        for _ in range(rng.integers(2, 5)):
            a += rng.uniform(-2.0, 2.0)
            step = rng.uniform(0.06, 0.2) * size
            r, c = r + step * np.sin(a), c + step * np.cos(a)
            pts.append((r, c))
        rr, cc = _polyline(pts, int(rng.integers(1, 3)), size)
    else:  # small elongated ellipse
        minor = rng.uniform(1.0, 2.5) * size / 64
        major = minor * rng.uniform(2.0, 4.0)
        r, c = rng.uniform(0, size - 1, 2)
        rr, cc = ellipse(r, c, minor, major, shape=(size, size), rotation=rng.uniform(-np.pi, np.pi))
    img[:, rr, cc] = colour


def _polyline(points, width, size):
    """Pixels of a clipped polyline, ``width`` 1 or 2 px thick."""
    rows, cols = [], []
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
        rr, cc = line(int(round(r0)), int(round(c0)), int(round(r1)), int(round(c1)))
        rows.append(rr)
        cols.append(cc)
        if width > 1:  # thicken perpendicular to the dominant direction
            steep = abs(r1 - r0) > abs(c1 - c0)
            rows.append(rr if steep else rr + 1)
            cols.append(cc + 1 if steep else cc)
    rr, cc = np.concatenate(rows), np.concatenate(cols)
    keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
    return rr[keep], cc[keep]


def _rotated(r, c, cr, cc, angle):
    """Rotate vertex offsets (r, c) by ``angle`` and move them to (cr, cc)."""
    cos, sin = np.cos(angle), np.sin(angle)
    r, c = np.asarray(r, float), np.asarray(c, float)
    return cr + r * cos - c * sin, cc + r * sin + c * cos


def _shape_mask(kind, cr, cc, half, angle, rng, size):
    """Boolean mask of one target shape with circumradius ``half``."""
    shape = (size, size)
    m = np.zeros(shape, dtype=bool)
    if kind == "circle":
        m[disk((cr, cc), half, shape=shape)] = True
    elif kind == "ring":
        m[disk((cr, cc), half, shape=shape)] = True
        m[disk((cr, cc), half * rng.uniform(0.45, 0.6), shape=shape)] = False
    elif kind == "square":
        s = half / np.sqrt(2)
        m[polygon(*_rotated([-s, -s, s, s], [-s, s, s, -s], cr, cc, angle), shape=shape)] = True
    elif kind == "triangle":
        a = angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
        m[polygon(cr + half * np.sin(a), cc + half * np.cos(a), shape=shape)] = True
    elif kind == "cross":
        t = half * rng.uniform(0.3, 0.4)  # half the arm thickness
        h = half
        r = [-h, -h, -t, -t, t, t, h, h, t, t, -t, -t]
        c = [-t, t, t, h, h, t, t, -t, -t, -h, -h, -t]
        m[polygon(*_rotated(r, c, cr, cc, angle), shape=shape)] = True
    else:  # pragma: no cover - CLASS_NAMES and this function must agree
        raise ValueError(kind)
    return m


def boxes_of(masks):
    """Tight boxes ``[..., 4]`` (x1, y1, x2, y2; pixel edges, so x2 = last column + 1) of boolean
    masks ``[..., H, W]``; an empty mask gives ``[0, 0, 0, 0]``."""
    m = np.asarray(masks, dtype=bool)
    flat = m.reshape(-1, *m.shape[-2:])
    out = np.zeros((len(flat), 4), dtype=np.float32)
    for i, mi in enumerate(flat):
        rows, cols = np.flatnonzero(mi.any(axis=1)), np.flatnonzero(mi.any(axis=0))
        if len(rows):
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out.reshape(*m.shape[:-2], 4)


def make_scenes(n, seed=0, size=64, objects=(1, 4)):
    """Generate ``n`` images with several target shapes each (detection and segmentation data).

    Like :func:`make_shapes` (same background, clutter and noise) but with between
    ``objects[0]`` and ``objects[1] - 1`` target shapes per image whose boxes do not overlap.
    Generation is deterministic in ``(seed, i, size, objects)``.

    Returns
    -------
    images : float32 [n, 3, size, size] in [0, 1]
    labels : int64 [n, K] class per object, -1 where an image has fewer than K = objects[1] - 1
    boxes : float32 [n, K, 4] tight (x1, y1, x2, y2) boxes in pixels (pixel edges)
    masks : bool [n, K, size, size] every object's pixels
    """
    n, size = int(n), int(size)
    k = int(objects[1]) - 1
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.full((n, k), -1, dtype=np.int64)
    boxes = np.zeros((n, k, 4), dtype=np.float32)
    masks = np.zeros((n, k, size, size), dtype=bool)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, 7])
        img = _background(rng, size)
        for _ in range(rng.integers(*_N_DISTRACTORS)):
            _distractor(rng, img)
        placed = []
        for _j in range(int(rng.integers(objects[0], objects[1]))):
            label = int(rng.integers(len(CLASS_NAMES)))
            for _ in range(30):  # rejection sampling for boxes that do not touch
                half = rng.uniform(*_SCALE_RANGE) * size / 2
                cr = rng.uniform(half + 1, size - 1 - half)
                cc = rng.uniform(half + 1, size - 1 - half)
                if all(abs(cr - r) > half + h + 1 or abs(cc - c) > half + h + 1 for r, c, h in placed):
                    break
            else:
                continue
            placed.append((cr, cc, half))
            m = _shape_mask(CLASS_NAMES[label], cr, cc, half, rng.uniform(0, 2 * np.pi), rng, size)
            under = img[:, m].mean(axis=1)
            colour = rng.uniform(0, 1, 3)
            for _ in range(50):
                if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
                    break
                colour = rng.uniform(0, 1, 3)
            img[:, m] = colour[:, None]
            q = len(placed) - 1
            labels[i, q], masks[i, q] = label, m
        boxes[i] = boxes_of(masks[i])
        img += rng.normal(0.0, rng.uniform(0.02, 0.08), img.shape)
        images[i] = np.clip(img, 0.0, 1.0)
    return images, labels, boxes, masks
