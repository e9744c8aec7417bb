"""Per-token scores as highlighted text: tokens drawn as coloured boxes in a PNG (Pillow).

Signed scores use a diverging scale (blue for negative, white for 0, red for positive) symmetric around 0
and scaled by the largest |score|; non-negative scores use white to red. Tokens wrap onto new lines at
``width`` pixels. The score itself is printed under each token when ``values`` is set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxplain.errors import OnnxplainError


def token_colours(scores, signed: bool = True) -> list:
    """RGB colours for ``scores``: diverging blue-white-red when ``signed``, white-red otherwise."""
    s = np.asarray(scores, dtype=np.float64)
    top = float(np.max(np.abs(s))) if s.size else 0.0
    t = s / top if top > 0 else np.zeros_like(s)
    out = []
    for v in t:
        v = float(np.clip(v, -1, 1)) if signed else float(np.clip(v, 0, 1))
        if v >= 0:
            out.append((255, int(round(255 * (1 - v))), int(round(255 * (1 - v)))))
        else:
            out.append((int(round(255 * (1 + v))), int(round(255 * (1 + v))), 255))
    return out


def render_tokens(
    tokens, scores, path, signed: bool | None = None, title: str | None = None, width: int = 720, values: bool = True
) -> Path:
    """Write ``tokens`` (strings) coloured by ``scores`` (one number each) to the PNG ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    tokens = [str(t) for t in tokens]
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(tokens) != len(scores):
        raise OnnxplainError(f"{len(tokens)} tokens but {len(scores)} scores; give one score per token")
    if not np.all(np.isfinite(scores)):
        raise OnnxplainError("token scores contain NaN or infinite values")
    signed = bool(np.any(scores < 0)) if signed is None else signed
    font = ImageFont.load_default()
    pad, gap, line_h = 6, 4, 22 + (14 if values else 0)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(s):
        box = measure.textbbox((0, 0), s, font=font)
        return box[2] - box[0]

    boxes, x, y = [], pad, pad + (20 if title else 0)
    for tok, sc in zip(tokens, scores):
        w = max(text_w(tok), text_w(f"{sc:+.2f}") if values else 0) + 2 * pad
        if x + w > width - pad and x > pad:
            x, y = pad, y + line_h + gap
        boxes.append((x, y, w, tok, sc))
        x += w + gap
    img = Image.new("RGB", (width, y + line_h + pad), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for (bx, by, w, tok, sc), colour in zip(boxes, token_colours(scores, signed)):
        draw.rectangle([bx, by, bx + w, by + line_h], fill=colour, outline=(160, 160, 160))
        ink = "white" if sum(colour) < 400 else "black"  # dark boxes get white text
        draw.text((bx + pad, by + 4), tok, fill=ink, font=font)
        if values:
            draw.text((bx + pad, by + 20), f"{sc:+.2f}", fill=ink, font=font)
    path = Path(path)
    img.save(path)
    return path
