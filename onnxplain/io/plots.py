"""Line charts drawn with Pillow (no plotting library): evaluation curves and sanity-check profiles."""

from __future__ import annotations

import numpy as np

from onnxplain.io.render import _font, _text_size

# thirty distinguishable colours: Paul Tol's "muted" nine, then colours from Kelly's 22 of maximum contrast,
# Tableau 10 and Tol's "bright", each the farthest (CIELAB) from those before it and from the white
# background; any two differ by at least 18 Delta-E. Past thirty series the dash pattern changes.
_HEX = (
    "332288 88CCEE 44AA99 117733 999933 DDCC77 CC6677 882255 AA4499 FF7F0E 222222 0067A5 D62728 F3C300 7F7F7F "
    "654522 882D17 8DB600 F99379 2CA02C 604E97 BBBBBB 17BECF 2B3D26 E377C2 E25822 C2B280 8C564B F6A600 DCD300"
)
PALETTE = tuple(tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in _HEX.split())
DASHES = (None, (7, 4), (2, 3))


def _ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    """About ``n`` round tick values covering [lo, hi]."""
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    t = np.arange(np.ceil(lo / step) * step, hi + step * 1e-9, step)
    return np.where(np.abs(t) < step * 1e-9, 0.0, t)  # no "-0" label


def _dashed(draw, points, color, width, dash):
    if dash is None:
        draw.line(points, fill=color, width=width)
        return
    on, off = dash
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        length = float(np.hypot(x1 - x0, y1 - y0))
        t = 0.0
        while t < length:
            a, b = t / length, min(t + on, length) / length
            draw.line(
                [(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                fill=color,
                width=width,
            )
            t += on + off


def _rotated(draw, text: str, font, angle: float):
    """``text`` in black on a transparent RGBA image turned by ``angle`` degrees (to paste with itself as mask)."""
    from PIL import Image, ImageDraw

    tw, th = _text_size(draw, text, font)
    img = Image.new("RGBA", (tw + 2, th + 4), (255, 255, 255, 0))
    ImageDraw.Draw(img).text((0, 0), text, fill="black", font=font)
    return img.rotate(angle, expand=True)


def line_chart(
    series: dict,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size=(640, 400),
    xticklabels: list[str] | None = None,
    ylim: tuple[float, float] | None = None,
) -> np.ndarray:
    """One line per entry of ``series`` (``name -> (x, y)``), with axes, ticks and a legend on the
    right -> RGB uint8 image. ``xticklabels`` labels the x positions 0, 1, ... (categorical x);
    non-finite points break a line."""
    from PIL import Image, ImageDraw

    if not series:
        raise ValueError("line_chart needs at least one series")
    font, small = _font(13), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = list(series)
    legend_w = max(_text_size(probe, n, small)[0] for n in names) + 40
    w, h = size
    left, right, top, bottom = 62, legend_w + 12, 30 if title else 12, 42 if not xticklabels else 90
    plot_w, plot_h = max(50, w - left - right), max(50, h - top - bottom, 15 * len(names) + 8)  # legend fits
    canvas = Image.new("RGB", (left + plot_w + right, top + plot_h + bottom), "white")
    d = ImageDraw.Draw(canvas)

    xs = np.concatenate([np.asarray(s[0], float) for s in series.values()])
    ys = np.concatenate([np.asarray(s[1], float) for s in series.values()])
    ys = ys[np.isfinite(ys)]
    x0, x1 = float(np.nanmin(xs)), float(np.nanmax(xs))
    y0, y1 = ylim if ylim else ((float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0))
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad_y = 0.04 * (y1 - y0)
    y0, y1 = y0 - pad_y, y1 + pad_y

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    grey = (220, 220, 220)
    for t in _ticks(y0, y1):
        _, yy = px(x0, t)
        d.line([(left, yy), (left + plot_w, yy)], fill=grey)
        label = f"{t:.3g}"
        tw, th = _text_size(d, label, small)
        d.text((left - tw - 6, yy - th / 2 - 1), label, fill="black", font=small)
    xt = np.arange(len(xticklabels)) if xticklabels else _ticks(x0, x1)
    for k, t in enumerate(xt):
        xx, _ = px(t, y0)
        d.line([(xx, top), (xx, top + plot_h)], fill=grey)
        label = xticklabels[k] if xticklabels else f"{t:.3g}"
        if xticklabels:  # rotated, so long layer names fit
            txt = _rotated(d, label, small, 45)
            canvas.paste(txt, (int(xx - txt.width + 4), top + plot_h + 4), txt)
        else:
            tw, _ = _text_size(d, label, small)
            d.text((xx - tw / 2, top + plot_h + 4), label, fill="black", font=small)
    d.rectangle([left, top, left + plot_w, top + plot_h], outline="black")

    for i, (name, (x, y)) in enumerate(series.items()):
        color, dash = PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        run: list = []
        for k in range(len(x) + 1):
            if k < len(x) and ok[k]:
                run.append(px(x[k], np.clip(y[k], y0, y1)))
                continue
            if len(run) > 1:
                _dashed(d, run, color, 2, dash)
            elif len(run) == 1:
                cx, cy = run[0]
                d.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=color)
            run = []
        ly = top + 4 + i * 15
        lx = left + plot_w + 12
        _dashed(d, [(lx, ly + 7), (lx + 22, ly + 7)], color, 2, dash)
        d.text((lx + 28, ly), name, fill="black", font=small)

    if title:
        tw, _ = _text_size(d, title, font)
        d.text((left + (plot_w - tw) / 2, 8), title, fill="black", font=font)
    if xlabel:
        tw, th = _text_size(d, xlabel, small)
        d.text((left + (plot_w - tw) / 2, canvas.height - th - 6), xlabel, fill="black", font=small)
    if ylabel:
        txt = _rotated(d, ylabel, small, 90)
        canvas.paste(txt, (4, int(top + (plot_h - txt.height) / 2)), txt)
    return np.asarray(canvas, dtype=np.uint8)
