"""A self-contained HTML report: one file, every picture embedded as a ``data:`` URI, no script, no
network access (no ``http(s)://`` reference at all), readable offline and safe to mail.

``explain --report out.html`` and ``evaluate --report out.html`` build one from :class:`Report`:
sections of headings, paragraphs, tables and images (RGB uint8 arrays or PNG bytes, encoded once).
The file is written through :func:`onnxplain.io.render.save_text`, so inside a command it is part of
the command's :class:`onnxplain.io.outputs.Outputs` transaction (registered before any work, staged,
renamed into place with the other outputs or removed with them).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from pathlib import Path

import numpy as np

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 72em;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } div.wide { overflow-x: auto; } td { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.4em 0.8em 0.8em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #444; max-width: 28em; }
img { image-rendering: auto; border: 1px solid #ddd; max-width: 100%; }
img.pixel { image-rendering: pixelated; }
"""


def png_bytes(image) -> bytes:
    """PNG bytes of an RGB uint8 array (bytes pass through)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


class Report:
    """Builds the HTML text; :meth:`save` writes it atomically."""

    def __init__(self, title: str, meta: str = ""):
        self.title, self.meta, self.parts = title, meta, []

    def heading(self, text: str) -> Report:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def paragraph(self, text: str) -> Report:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def table(self, header, rows, numeric=()) -> Report:
        """``rows``: lists of cells (str or numbers; floats shown with 4 significant digits)."""

        def cell(v, j):
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            cls = ' class="num"' if j in numeric or isinstance(v, (int, float)) else ""
            return f"<td{cls}>{html.escape(text)}</td>"

        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(cell(v, j) for j, v in enumerate(r)) + "</tr>" for r in rows)
        self.parts.append(f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        return self

    def image(
        self, image, caption: str = "", alt: str | None = None, width: int | None = None, pixelated: bool = False
    ) -> Report:
        """One embedded picture with a caption; ``width`` (CSS pixels) scales it for display only."""
        w = f' width="{int(width)}"' if width else ""
        cls = ' class="pixel"' if pixelated else ""
        alt_text = html.escape(alt if alt is not None else caption or "figure", quote=True)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{data_uri(image)}" alt="{alt_text}"{w}{cls}>{cap}</figure>')
        return self

    def html(self) -> str:
        from onnxplain import __version__ as version

        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        meta = html.escape(self.meta + (" · " if self.meta else "") + f"onnxplain {version}, {when}")
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{html.escape(self.title)}</h1><p class="meta">{meta}</p>' + "\n".join(self.parts) + "</body></html>\n"
        )

    def save(self, path) -> Path:
        from onnxplain.io.render import save_text

        return save_text(self.html(), path)
