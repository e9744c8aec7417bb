"""Heatmaps, overlays and comparison grids, with numpy and Pillow only.

Colour maps
    * signed maps (gradient, input x gradient, integrated gradients, smoothgrad) use a
      blue-white-red diverging map, symmetric around 0: 0 is near-white, ``-scale`` the darkest
      blue and ``+scale`` the darkest red. Its anchors are ColorBrewer's RdBu (reversed), whose
      lightness falls evenly on both sides of the white centre.
    * non-negative maps (saliency, smoothgrad_sq) use a sequential near-white -> yellow ->
      orange -> dark red map (ColorBrewer YlOrRd anchors), monotonic in lightness.
    * ``scale`` defaults to a high percentile (99.5) of ``|a|``, so a few extreme pixels do not
      wash out the rest; values beyond it saturate.

Reducing channels
    A [C, H, W] (or [H, W, C]) attribution becomes [H, W] by **summing over channels**. For
    signed methods this keeps the sign and, for integrated gradients and input x gradient,
    the completeness property (the map's total equals the attribution's total). For
    non-negative maps the sum is also used (for smoothgrad_sq it is the squared gradient norm
    over channels); saliency already has one channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PERCENTILE = 99.5

_RDBU_R = np.array(
    [  # -1 .. +1 in 11 steps: dark blue, ..., near-white, ..., dark red
        (5, 48, 97),
        (33, 102, 172),
        (67, 147, 195),
        (146, 197, 222),
        (209, 229, 240),
        (247, 247, 247),
        (253, 219, 199),
        (244, 165, 130),
        (214, 96, 77),
        (178, 24, 43),
        (103, 0, 31),
    ],
    dtype=np.float64,
)
_YLORRD = np.array(
    [  # 0 .. 1 in 9 steps
        (255, 255, 204),
        (255, 237, 160),
        (254, 217, 118),
        (254, 178, 76),
        (253, 141, 60),
        (252, 78, 42),
        (227, 26, 28),
        (189, 0, 38),
        (128, 0, 38),
    ],
    dtype=np.float64,
)


def is_signed(method: str) -> bool:
    """Whether a method's maps are signed (diverging colours) or not (sequential): the method table's ``map``."""
    from onnxplain.methods.catalog import method as lookup

    return lookup(method).signed


def map_kind(method: str) -> str:
    """``signed``, ``non-negative`` or ``offset``: the method table's ``map`` of a method."""
    from onnxplain.methods.catalog import method as lookup

    return lookup(method).map


def for_display(method: str, a2: np.ndarray, baseline: np.ndarray | None = None) -> tuple[np.ndarray, bool, str]:
    """(the values to colour, signed colours?, what the colour bar's 0 means) for one [H, W] map.

    Offset maps (RISE, D-RISE, perturbation masks: non-negative around a level that carries no
    information) are drawn relative to that level, on the diverging scale: ``a - baseline`` when the
    method gives its baseline (RISE: the mean score times the masks' coverage, Petsiuk et al.'s
    normalisation), else ``a - mean(a)``. Drawn raw on a sequential scale they would colour the whole
    image as evidence."""
    a2 = np.asarray(a2, dtype=np.float64)
    kind = map_kind(method)
    if kind == "offset":
        if baseline is not None:
            b = resize_map(to_2d(baseline), a2.shape)
            return a2 - b, True, "0 = the mean score of random masks"
        return a2 - a2.mean(), True, "0 = the map's mean"
    if kind == "signed":
        return a2, True, "0 = no effect"
    return a2, False, ""


def to_2d(attribution: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """[C, H, W] / [H, W, C] / [1, C, H, W] / [H, W] -> [H, W] float64, summing over channels."""
    a = np.asarray(attribution, dtype=np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 1 and a.shape[channel_axis] != 1:
        a = a[0]  # a one-channel map [1, H, W] (CAMs) whatever the image layout
    if a.ndim == 3:
        a = a.sum(axis=channel_axis)
    if a.ndim != 2:
        raise ValueError(f"cannot reduce an attribution of shape {list(np.shape(attribution))} to [H, W]")
    return a


def robust_scale(a, percentile: float = PERCENTILE) -> float:
    """A high percentile of ``|a|`` (finite values only); falls back to max |a|, then 1."""
    v = np.abs(np.asarray(a, dtype=np.float64))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    s = float(np.percentile(v, percentile))
    if s <= 0:
        s = float(v.max())
    return s if s > 0 else 1.0


def shared_scale(maps, percentile: float = PERCENTILE) -> float:
    """One scale for several maps (a consistent colour scale across a row)."""
    return robust_scale(np.concatenate([np.abs(np.asarray(m, dtype=np.float64)).ravel() for m in maps]), percentile)


def _lookup(t: np.ndarray, anchors: np.ndarray, lo: float) -> np.ndarray:
    pos = np.linspace(lo, 1.0, len(anchors))
    t = np.nan_to_num(np.clip(t, lo, 1.0), nan=0.0)
    out = np.empty(t.shape + (3,), dtype=np.float64)
    for c in range(3):
        out[..., c] = np.interp(t, pos, anchors[:, c])
    return np.rint(out).astype(np.uint8)


def diverging(a, scale: float | None = None, percentile: float = PERCENTILE) -> np.ndarray:
    """Signed values -> RGB uint8 [..., 3]; 0 is near-white, -scale dark blue, +scale dark red."""
    a = np.asarray(a, dtype=np.float64)
    s = robust_scale(a, percentile) if scale is None else float(scale)
    return _lookup(a / (s if s > 0 else 1.0), _RDBU_R, -1.0)


def sequential(a, scale: float | None = None, percentile: float = PERCENTILE) -> np.ndarray:
    """Non-negative values -> RGB uint8 [..., 3]; 0 is near-white, ``scale`` dark red."""
    a = np.asarray(a, dtype=np.float64)
    s = robust_scale(a, percentile) if scale is None else float(scale)
    return _lookup(a / (s if s > 0 else 1.0), _YLORRD, 0.0)


def colorize(a, signed: bool = True, scale: float | None = None, percentile: float = PERCENTILE) -> np.ndarray:
    return diverging(a, scale, percentile) if signed else sequential(a, scale, percentile)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an [H, W, 3] image, got shape {list(img.shape)}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img[..., :3]


def resize_map(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float [H, W] map to (H, W)."""
    from PIL import Image

    a = np.asarray(a, dtype=np.float32)
    if a.shape == tuple(size):
        return a.astype(np.float64)
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float64)


def overlay(
    image: np.ndarray,
    attribution: np.ndarray,
    signed: bool = True,
    alpha: float = 0.75,
    scale: float | None = None,
    percentile: float = PERCENTILE,
) -> np.ndarray:
    """Draw an [H, W] attribution over an RGB uint8 image -> RGB uint8 [H, W, 3].

    The image is shown in grey; each pixel's heat colour is blended in with opacity
    ``alpha * min(|a| / scale, 1)``, so unimportant regions show the image and important ones
    the colour. A map of another size is resized (bilinear) to the image.
    """
    img = _as_rgb(image).astype(np.float64)
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"overlay needs an [H, W] attribution (see to_2d), got shape {list(a.shape)}")
    a = resize_map(a, img.shape[:2])
    s = robust_scale(a, percentile) if scale is None else float(scale)
    s = s if s > 0 else 1.0
    heat = colorize(a, signed, s).astype(np.float64)
    grey = img @ np.array([0.299, 0.587, 0.114])
    base = np.repeat((0.25 * 255 + 0.75 * grey)[..., None], 3, axis=-1)  # lightened grey
    mag = np.abs(a) if signed else np.clip(a, 0, None)
    w = (float(np.clip(alpha, 0, 1)) * np.clip(np.nan_to_num(mag / s), 0, 1))[..., None]
    return np.clip(np.rint(base * (1 - w) + heat * w), 0, 255).astype(np.uint8)


def outline(image: np.ndarray, mask: np.ndarray, color=(0, 200, 0), width: int = 1) -> np.ndarray:
    """Draw the boundary of a boolean mask ([H, W], the image's size) on a copy of the image."""
    img = _as_rgb(image).copy()
    m = np.asarray(mask, dtype=bool)
    edge = np.zeros_like(m)
    inner = m.copy()
    for _ in range(max(1, width)):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        edge |= inner & ~shrunk
        inner = shrunk
    img[edge] = np.asarray(color, dtype=np.uint8)
    return img


def upscale(image: np.ndarray, min_side: int = 256) -> tuple[np.ndarray, int]:
    """The image enlarged by the smallest integer factor that makes its short side >= ``min_side``
    (nearest neighbour), and that factor."""
    img = _as_rgb(image)
    k = max(1, -(-min_side // min(img.shape[:2])))
    return (np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img.copy()), k


def draw_boxes(
    image: np.ndarray, boxes, color=(255, 255, 0), width: int = 2, scale: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """Draw xyxy boxes (pixels of an image ``scale`` times smaller) on a copy of the image; ``alpha``
    < 1 blends the lines in (faint boxes)."""
    from PIL import Image, ImageDraw

    img = _as_rgb(image)
    layer = Image.fromarray(img.copy())
    draw = ImageDraw.Draw(layer)
    for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = (b * scale).tolist()
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=tuple(int(c) for c in color), width=width)
    out = np.asarray(layer, dtype=np.float64)
    return np.clip(np.rint(img * (1 - alpha) + out * alpha), 0, 255).astype(np.uint8)


def caption(image: np.ndarray, text: str, size: int = 14) -> np.ndarray:
    """The image with a white strip below holding ``text`` (wrapped to the image's width)."""
    from PIL import Image, ImageDraw

    img = _as_rgb(image)
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(probe, text, font, img.shape[1] - 8)
    line_h = _text_size(probe, "Ag", font)[1] + 4
    strip = Image.new("RGB", (img.shape[1], line_h * len(lines) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * line_h), line, fill=(0, 0, 0), font=font)
    return np.concatenate([img, np.asarray(strip, dtype=np.uint8)], axis=0)


def annotate(
    picture: np.ndarray, item: dict | None, source_size: tuple[int, int] | None = None, min_side: int = 256
) -> np.ndarray:
    """An overlay marked with what was explained (one :attr:`onnxplain.targets.Target.items` entry):
    the explained box in yellow, the other detections faint white, a region's outline in green,
    and the caption (the detection, class, character or timestep) below. Small pictures are enlarged
    first (nearest, integer factor) so that lines stay thin."""
    if not item:
        return picture
    img, k = upscale(picture, min_side)
    src = source_size or picture.shape[:2]
    scale = k * picture.shape[1] / src[1]
    if item.get("mask") is not None:
        m = np.asarray(item["mask"], dtype=bool)
        rows = np.arange(img.shape[0]) * m.shape[0] // img.shape[0]
        cols = np.arange(img.shape[1]) * m.shape[1] // img.shape[1]
        img = outline(img, m[rows][:, cols], color=(0, 230, 0), width=2)
    if item.get("boxes") is not None and len(item["boxes"]):
        img = draw_boxes(img, item["boxes"], color=(255, 255, 255), width=1, scale=scale, alpha=0.6)
    if item.get("box") is not None:
        img = draw_boxes(img, item["box"], color=(255, 230, 0), width=2, scale=scale)
    return caption(img, item["caption"]) if item.get("caption") else img


# ---- composing ------------------------------------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _fit(img: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = _as_rgb(img)
    if img.shape[:2] == tuple(cell):
        return img
    h, w = img.shape[:2]
    integer_up = cell[0] % h == 0 and cell[1] % w == 0 and cell[0] // h == cell[1] // w
    mode = Image.Resampling.NEAREST if integer_up else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((cell[1], cell[0]), mode), dtype=np.uint8)


def colorbar(
    width: int, signed: bool = True, scale: float | None = None, height: int = 12, note: str | None = None
) -> np.ndarray:
    """A horizontal colour bar with end labels (the scale's numbers when given) and ``note`` below (what
    the scale is and what its 0 means) -> RGB uint8 image."""
    from PIL import Image, ImageDraw

    t = np.linspace(-1 if signed else 0, 1, max(2, width))
    bar = colorize(np.repeat(t[None], height, axis=0), signed, scale=1.0)
    if scale is None:
        labels = ("-max", "0", "+max") if signed else ("0", "", "max")
    else:
        labels = (f"{-scale:.3g}", "0", f"{scale:.3g}") if signed else ("0", "", f"{scale:.3g}")
    font = _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    th = max(_text_size(probe, s or "0", font)[1] for s in labels) + 4
    canvas = Image.new("RGB", (width, height + th + (th if note else 0) + 2), "white")
    canvas.paste(Image.fromarray(bar), (0, 0))
    d = ImageDraw.Draw(canvas)
    for text, x in zip(labels, (0, width // 2, width)):
        if not text:
            continue
        tw = _text_size(d, text, font)[0]
        d.text((min(max(0, x - tw // 2), width - tw), height + 2), text, fill="black", font=font)
    if note:
        lines = _wrap(d, note, font, width)
        canvas2 = Image.new("RGB", (width, height + th + th * len(lines) + 2), "white")
        canvas2.paste(canvas.crop((0, 0, width, height + th)), (0, 0))
        d = ImageDraw.Draw(canvas2)
        for i, line in enumerate(lines):
            tw = _text_size(d, line, font)[0]
            d.text((max(0, (width - tw) // 2), height + th * (i + 1) + 1), line, fill=(90, 90, 90), font=font)
        canvas = canvas2
    return np.asarray(canvas, dtype=np.uint8)


def with_colorbar(
    picture: np.ndarray, signed: bool, scale: float, note: str | None = None, text: str | None = None
) -> np.ndarray:
    """One overlay as a figure: ``text`` (prediction, target) above it, its colour bar with the scale's
    numbers and ``note`` below."""
    img = _as_rgb(picture)
    if min(img.shape[:2]) < 256:
        img, _ = upscale(img, 256)
    width = img.shape[1]
    bar = colorbar(min(width, 320), signed, scale, note=note)
    strip = np.full((bar.shape[0] + 8, width, 3), 255, np.uint8)
    x0 = (width - bar.shape[1]) // 2
    strip[4 : 4 + bar.shape[0], x0 : x0 + bar.shape[1]] = bar
    out = np.concatenate([img, strip], axis=0)
    if text:
        top = caption(np.full((1, width, 3), 255, np.uint8), text)[1:]
        out = np.concatenate([top, out], axis=0)
    return out


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Break ``text`` at spaces/underscores into lines no wider than ``width`` (cut if a word is)."""
    words = text.replace("_", " ").split()
    lines: list[str] = []
    for w in words:
        cand = f"{lines[-1]} {w}" if lines else w
        if lines and _text_size(draw, cand, font)[0] <= width:
            lines[-1] = cand
        else:
            lines.append(w)
    for k, line in enumerate(lines):
        if _text_size(draw, line, font)[0] > width:
            while len(line) > 1 and _text_size(draw, line + "...", font)[0] > width:
                line = line[:-1]
            lines[k] = line + "..."
    return lines or [""]


def grid(
    rows,
    titles=None,
    row_titles=None,
    cell: tuple[int, int] | None = None,
    pad: int = 6,
    colorbars=None,
    note: str | None = None,
    column_bars=None,
) -> np.ndarray:
    """Compose images into a titled grid -> RGB uint8 image.

    rows: list of rows, each a list of RGB uint8 images (cells may be ``None`` for blanks).
    titles: one title per column (list of str, drawn once above the first row) or one per
        cell (list of lists, drawn above every cell). Long titles wrap at spaces/underscores.
    row_titles: one label per row, drawn left of it.
    cell: (H, W) of every cell; default: the first image upscaled to at least 128 px.
    colorbars: ``"signed"``, ``"positive"``, a list of those, or a list of
        ``(kind, scale_or_None)``; one colour bar per entry is drawn under the grid.
    note: a line of small text under the colour bars (e.g. how the scale was chosen).
    column_bars: one entry per column, None or ``(signed, scale, note)``: a colour bar with the scale's
        numbers drawn under that column (the scale its cells were coloured with).
    """
    from PIL import Image, ImageDraw

    rows = [list(r) for r in rows]
    if not rows or not any(c is not None for r in rows for c in r):
        raise ValueError("grid needs at least one image")
    first = next(_as_rgb(c) for r in rows for c in r if c is not None)
    if cell is None:
        h, w = first.shape[:2]
        k = max(1, int(np.ceil(128 / max(1, min(h, w)))))
        cell = (h * k, w * k)
    ncols = max(len(r) for r in rows)
    font, small = _font(13), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + 3
    per_cell = titles is not None and len(titles) > 0 and isinstance(titles[0], (list, tuple))

    def title_lines(i, j):
        t = None
        if titles is not None:
            if per_cell:
                t = titles[i][j] if i < len(titles) and j < len(titles[i]) else None
            elif i == 0:
                t = titles[j] if j < len(titles) else None
        return [ln for part in str(t).split("\n") for ln in _wrap(probe, part, font, cell[1] + pad - 2)] if t else []

    lines = [[title_lines(i, j) for j in range(ncols)] for i in range(len(rows))]
    title_h = [max((len(c) for c in r), default=0) * line_h + (3 if any(r) else 0) for r in lines]
    rw = max([_text_size(probe, t, font)[0] for t in (row_titles or []) if t] or [0])
    rw = rw + 2 * pad if rw else 0
    width = rw + ncols * (cell[1] + pad) + pad
    bars = []
    if colorbars:
        specs = [colorbars] if isinstance(colorbars, str) else list(colorbars)
        for spec in specs:
            kind, scale = (spec, None) if isinstance(spec, str) else spec
            bars.append(colorbar(min(256, max(96, width - 2 * pad)), kind == "signed", scale))
    bars_h = sum(b.shape[0] + pad for b in bars)
    col_bars = [
        None if spec is None else colorbar(cell[1], spec[0], spec[1], note=spec[2] if len(spec) > 2 else None)
        for spec in (column_bars or [])
    ]
    col_h = max([b.shape[0] for b in col_bars if b is not None] or [-pad]) + pad
    bars_h += col_h if col_bars else 0
    note_h = (_text_size(probe, note, small)[1] + pad + 4) if note else 0
    height = pad + sum(title_h) + len(rows) * (cell[0] + pad) + bars_h + note_h
    canvas = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(canvas)
    y = pad
    for i, r in enumerate(rows):
        top = y + title_h[i]
        if row_titles and i < len(row_titles) and row_titles[i]:
            tht = _text_size(d, row_titles[i], font)[1]
            d.text((pad, top + (cell[0] - tht) // 2), row_titles[i], fill="black", font=font)
        for j in range(ncols):
            x = rw + pad + j * (cell[1] + pad)
            for k, line in enumerate(lines[i][j]):
                tw = _text_size(d, line, font)[0]
                d.text((x + (cell[1] - tw) // 2, y + k * line_h), line, fill="black", font=font)
            img = r[j] if j < len(r) else None
            if img is not None:
                canvas.paste(Image.fromarray(_fit(img, cell)), (x, top))
        y = top + cell[0] + pad
    if col_bars:
        for j, b in enumerate(col_bars):
            if b is not None:
                canvas.paste(Image.fromarray(b), (rw + pad + j * (cell[1] + pad), y))
        y += col_h
    for b in bars:
        canvas.paste(Image.fromarray(b), ((width - b.shape[1]) // 2, y))
        y += b.shape[0] + pad
    if note:
        tw = _text_size(d, note, small)[0]
        d.text((max(pad, (width - tw) // 2), y), note, fill=(90, 90, 90), font=small)
    return np.asarray(canvas, dtype=np.uint8)


def write_atomic(path, write, suffix: str = "") -> Path:
    """Write ``path`` with ``write(f)`` (a binary file object) atomically: see :mod:`onnxplain.io.outputs`."""
    from onnxplain.io.outputs import write_atomic as write_out

    return write_out(path, write, suffix)


def save_png(image: np.ndarray, path) -> Path:
    """Write an RGB uint8 image as PNG, atomically."""
    from PIL import Image

    picture = Image.fromarray(_as_rgb(image))
    return write_atomic(path, lambda f: picture.save(f, format="PNG"))


def save_npy(array: np.ndarray, path) -> Path:
    """``np.save``, atomically."""
    a = np.asarray(array)
    return write_atomic(path, lambda f: np.save(f, a, allow_pickle=False))


def save_text(text: str, path) -> Path:
    """Write UTF-8 text, atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda f: f.write(data))
