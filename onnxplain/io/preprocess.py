"""Image preprocessing for the CLI: load, resize, normalise, lay out, and invert for display.

One formula covers every preset; ``p`` is a pixel value in 0..255 in the tensor's channel
order (RGB, or BGR with ``bgr``)::

    x = (p * scale - mean) / std

``mean`` and ``std`` are per channel and given in the tensor's channel order (after the BGR
swap). Presets (explicit options override a preset's fields):

============  =====================================================  ==================
preset        formula                                                range of ``x``
============  =====================================================  ==================
``raw01``     ``p / 255`` (the default)                              [0, 1]
``imagenet``  ``(p / 255 - (.485, .456, .406)) / (.229, .224, .225)``  about [-2.1, 2.6]
``caffe``     BGR, ``p - (103.939, 116.779, 123.68)``, no std         about [-124, 152]
``tf``        ``p / 127.5 - 1``                                      [-1, 1]
============  =====================================================  ==================

Presets fix no layout: it is read off the model input (1 or 3 channels on axis 1 -> NCHW, on the
last axis -> NHWC) unless ``layout`` is given. Images are brought to the model input's static height and
width (or ``size``) by ``resize``: ``crop`` (default: scaled so that the short side fits, then the centre
cut out; the aspect ratio is kept), ``pad`` (scaled so that the long side fits, the rest letterboxed with
the photo's mean colour) or ``stretch`` (both sides scaled independently: a non-square photo is
distorted). Bilinear throughout. The model-size RGB uint8 image is kept for display, so an overlay never
has to undo the normalisation, and so is the photo itself (at most ``PHOTO_MAX`` pixels on its long
side) with the :class:`Geometry` that maps a model-resolution map back onto it (:func:`to_photo`);
:func:`to_display` inverts the normalisation for ``.npy`` inputs.

Models may carry their preprocessing in their metadata (``metadata_props``), under the key
``onnxplain.preprocess``: a JSON object with any of ``size`` ([H, W]), ``mean``, ``std`` (lists, tensor
channel order), ``scale`` (number), ``layout`` ("NCHW"/"NHWC"), ``bgr`` (bool), ``resize``
("crop"/"pad"/"stretch") and ``preset`` (a preset name the other keys refine). :func:`from_metadata`
reads it; ``onnxplain export --preprocess-from ...`` writes it; options on the command line win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.validate import check_bytes

LAYOUTS = ("NCHW", "NHWC")
RESIZES = ("crop", "pad", "stretch")
PHOTO_MAX = 2048  # the photo kept for full-resolution overlays: at most this many pixels on its long side
METADATA_KEY = "onnxplain.preprocess"


@dataclass(frozen=True)
class Preprocess:
    """A fully or partly resolved preprocessing recipe (``None`` = not decided yet)."""

    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bgr: bool = False
    layout: str | None = None  # NCHW | NHWC; None = infer from the model input
    size: tuple[int, int] | None = None  # (H, W); None = the model input's static H, W
    resize: str = "crop"  # crop | pad | stretch: how a photo of another aspect ratio is brought to size

    def channels_ok(self, channels: int) -> None:
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, channels):
                raise OnnxplainError(f"--{name} has {len(v)} values but the model input has {channels} channel(s)")
        if any(s == 0 for s in self.std):
            raise OnnxplainError("--std values must be non-zero")
        if self.scale == 0 or not np.isfinite(self.scale):
            raise OnnxplainError("--scale must be a finite non-zero number")


PRESETS: dict[str, Preprocess] = {
    "raw01": Preprocess(scale=1 / 255),
    "imagenet": Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "caffe": Preprocess(scale=1.0, mean=(103.939, 116.779, 123.68), bgr=True),
    "tf": Preprocess(scale=1 / 127.5, mean=(1.0,)),
}


# ---- parsing helpers for CLI strings ----------------------------------------------------------
def parse_number(text: str, what: str) -> float:
    """``"0.5"``, ``"1/255"`` or ``"1e-3"`` -> float."""
    try:
        v = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise OnnxplainError(f"{what}: '{text}' is not a number (examples: 0.5, 1/255)") from None
    if not math.isfinite(v):
        raise OnnxplainError(f"{what}: '{text}' is not a finite number")
    return v


def parse_numbers(text: str, what: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` or ``"0.485 0.456 0.406"`` -> a tuple of floats."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise OnnxplainError(f"{what}: no values given")
    return tuple(parse_number(p, what) for p in parts)


def parse_size(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"160x224"``, ``"160,224"`` or ``"160 224"`` -> (160, 224) as (H, W)."""
    parts = [p for p in text.lower().replace("x", " ").replace(",", " ").split() if p]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise OnnxplainError(f"--size: '{text}' is not a size (examples: --size 224, --size 160 224)")
    return dims[0], dims[1]


def resolve(
    preset: str | None = None,
    *,
    scale=None,
    mean=None,
    std=None,
    bgr: bool | None = None,
    layout: str | None = None,
    size=None,
    resize: str | None = None,
    base: Preprocess | None = None,
) -> Preprocess:
    """A preset (or ``base``, e.g. the model's metadata recipe) with explicit options on top (strings are
    parsed as on the command line)."""
    name = (preset or "raw01").lower()
    if name not in PRESETS:
        raise OnnxplainError(f"unknown preset '{preset}' (choose from: {', '.join(PRESETS)})")
    p = PRESETS[name] if base is None or preset is not None else base
    if resize is not None:
        if resize not in RESIZES:
            raise OnnxplainError(f"--resize must be one of {', '.join(RESIZES)}, not '{resize}'")
        p = replace(p, resize=resize)
    if scale is not None:
        p = replace(p, scale=parse_number(scale, "--scale") if isinstance(scale, str) else float(scale))
    if mean is not None:
        p = replace(p, mean=parse_numbers(mean, "--mean") if isinstance(mean, str) else tuple(map(float, mean)))
    if std is not None:
        p = replace(p, std=parse_numbers(std, "--std") if isinstance(std, str) else tuple(map(float, std)))
    if bgr is not None:
        p = replace(p, bgr=bool(bgr))
    if layout is not None:
        lay = layout.upper()
        if lay not in LAYOUTS:
            raise OnnxplainError(f"--layout must be NCHW or NHWC, not '{layout}'")
        p = replace(p, layout=lay)
    if size is not None:
        p = replace(p, size=parse_size(size) if isinstance(size, str) else (int(size[0]), int(size[1])))
    return p


def from_metadata(model_proto) -> Preprocess | None:
    """The recipe a model carries under ``onnxplain.preprocess`` (see the module docstring), or None;
    a malformed entry is one line naming the key."""
    import json

    raw = next((p.value for p in model_proto.metadata_props if p.key == METADATA_KEY), None)
    if raw is None:
        return None
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        unknown = set(d) - {"preset", "size", "mean", "std", "scale", "layout", "bgr", "resize"}
        if unknown:
            raise ValueError(f"unknown keys {', '.join(sorted(unknown))}")
        size = d.get("size")
        if size is not None:
            size = (int(size), int(size)) if np.isscalar(size) else tuple(int(v) for v in size)
        return resolve(
            d.get("preset"),
            scale=d.get("scale"),
            mean=d.get("mean"),
            std=d.get("std"),
            bgr=d.get("bgr"),
            layout=d.get("layout"),
            size=size,
            resize=d.get("resize"),
        )
    except (ValueError, TypeError, OnnxplainError) as exc:
        raise OnnxplainError(
            f"the model's metadata '{METADATA_KEY}' is not a usable preprocessing recipe ({exc}); "
            "give --preset/--mean/--std/--size on the command line or fix the entry"
        ) from None


def to_metadata(p: Preprocess) -> str:
    """The JSON that :func:`from_metadata` reads back as ``p``."""
    import json

    d = {"scale": p.scale, "mean": list(p.mean), "std": list(p.std), "bgr": p.bgr, "resize": p.resize}
    if p.layout is not None:
        d["layout"] = p.layout
    if p.size is not None:
        d["size"] = list(p.size)
    return json.dumps(d)


# ---- the model's expectations -------------------------------------------------------------------
def infer_layout(shape) -> str | None:
    """NCHW when axis 1 has 1 or 3 channels, NHWC when the last axis has; None when unclear."""
    if shape is None or len(shape) != 4:
        return None
    if shape[1] in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    return None


def for_model(p: Preprocess, shape) -> Preprocess:
    """Fill in layout and size from the model input's shape ([N, C, H, W] or [N, H, W, C])."""
    if shape is None or len(shape) != 4:
        rank = "unknown" if shape is None else len(shape)
        raise OnnxplainError(
            f"image files need a rank-4 image input (NCHW or NHWC), the model input has rank {rank}; "
            "pass preprocessed .npy arrays instead"
        )
    layout = p.layout or infer_layout(shape)
    if layout is None:
        raise OnnxplainError(
            f"cannot tell the layout of input shape {_fmt(shape)} (1 or 3 channels on axis 1 or 3); "
            "pass --layout NCHW or NHWC"
        )
    c = shape[1] if layout == "NCHW" else shape[3]
    if isinstance(c, int) and c not in (1, 3):
        raise OnnxplainError(f"input shape {_fmt(shape)} with layout {layout} has {c} channels; images give 1 or 3")
    size = p.size
    if size is None:
        h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            size = (h, w)
    return replace(p, layout=layout, size=size)


def channels_of(p: Preprocess, shape) -> int:
    c = shape[1] if p.layout == "NCHW" else shape[3]
    return c if isinstance(c, int) and c > 0 else 3


# ---- images ---------------------------------------------------------------------------------------
def load_image(path, max_memory: int | None = None) -> np.ndarray:
    """PNG/JPEG/... -> RGB uint8 [H, W, 3] (EXIF orientation applied, alpha dropped).

    The header's size is checked against the memory budget (:func:`onnxplain.validate.check_bytes`)
    before the pixels are decoded: a small file can claim a huge image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise OnnxplainError(f"no such file: {path}")
    if not path.is_file():
        raise OnnxplainError(f"not a file: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
            check_bytes(w * h * 4 * 3, max_memory, f"decoding {path.name} ({w}x{h} pixels)")
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12) * 255
                im = Image.fromarray(a.astype(np.uint8))
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise OnnxplainError(f"cannot read image {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def resize(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image to (H, W); no-op when ``size`` is None or equal."""
    from PIL import Image

    if size is None or tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    h, w = size
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


@dataclass(frozen=True)
class Geometry:
    """How the model's image sits on the photo: ``mode`` (crop, pad, stretch) and ``box``, fractions
    (top, left, bottom, right): for crop, the part of the photo the model sees; for pad, the part of the
    model's image the photo fills; for stretch (0, 0, 1, 1)."""

    mode: str
    box: tuple[float, float, float, float]
    photo_hw: tuple[int, int]  # of the original photo

    @property
    def square(self) -> bool:
        return self.photo_hw[0] == self.photo_hw[1]


def fit(rgb: np.ndarray, size: tuple[int, int] | None, mode: str = "crop") -> tuple[np.ndarray, Geometry]:
    """An RGB uint8 photo brought to (H, W) by ``mode`` (see the module docstring) and its :class:`Geometry`."""
    h, w = rgb.shape[:2]
    if size is None or tuple(size) == (h, w) or mode == "stretch":
        return resize(rgb, size), Geometry("stretch", (0.0, 0.0, 1.0, 1.0), (h, w))
    H, W = size
    if mode == "crop":
        s = max(H / h, W / w)
        ch, cw = min(h, H / s), min(w, W / s)  # the photo region that fills the model image
        top, left = (h - ch) / 2, (w - cw) / 2
        y0, x0, y1, x1 = (int(round(top)), int(round(left)), int(round(top + ch)), int(round(left + cw)))
        out = resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (H, W))
        return out, Geometry("crop", (y0 / h, x0 / w, y1 / h, x1 / w), (h, w))
    if mode == "pad":
        s = min(H / h, W / w)
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        top, left = (H - nh) // 2, (W - nw) // 2
        canvas = np.empty((H, W, 3), np.uint8)
        canvas[:] = np.rint(rgb.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
        canvas[top : top + nh, left : left + nw] = resize(rgb, (nh, nw))
        return canvas, Geometry("pad", (top / H, left / W, (top + nh) / H, (left + nw) / W), (h, w))
    raise OnnxplainError(f"resize must be one of {', '.join(RESIZES)}, not '{mode}'")


def to_photo(a2: np.ndarray, geometry: Geometry, photo_hw: tuple[int, int]) -> np.ndarray:
    """A model-resolution [H, W] map resized back onto the photo (``photo_hw``, the shown photo's size):
    NaN where the model did not see the photo (outside a centre crop)."""
    from onnxplain.io.render import resize_map

    a2 = np.asarray(a2, dtype=np.float64)
    ph, pw = photo_hw
    y0, x0, y1, x1 = geometry.box
    if geometry.mode == "pad":
        H, W = a2.shape
        inner = a2[int(round(y0 * H)) : int(round(y1 * H)), int(round(x0 * W)) : int(round(x1 * W))]
        return resize_map(inner, (ph, pw))
    if geometry.mode == "crop":
        out = np.full((ph, pw), np.nan)
        r0, c0, r1, c1 = int(round(y0 * ph)), int(round(x0 * pw)), int(round(y1 * ph)), int(round(x1 * pw))
        out[r0:r1, c0:c1] = resize_map(a2, (r1 - r0, c1 - c0))
        return out
    return resize_map(a2, (ph, pw))


def describe_fit(name: str, geometry: Geometry, size) -> str | None:
    """A one-line note for a photo that is not square (how it was brought to the model's size), else None."""
    h, w = geometry.photo_hw
    if h == w or size is None or h * size[1] == w * size[0]:
        return None
    how = {
        "crop": "centre-cropped",
        "pad": "letterboxed",
        "stretch": "stretched (distorted; --resize crop or pad keeps the aspect ratio)",
    }[geometry.mode]
    return f"{name}: {w}x{h} photo {how} to the model's {size[1]}x{size[0]} (--resize crop|pad|stretch)"


def to_tensor(rgb: np.ndarray, p: Preprocess, channels: int = 3, dtype=np.float32) -> np.ndarray:
    """RGB uint8 [H, W, 3] (already resized) -> one item, [C, H, W] or [H, W, C], normalised."""
    x = rgb.astype(np.float64)
    if channels == 1:
        x = (x @ np.array([0.299, 0.587, 0.114]))[..., None]  # ITU-R 601 luma
    elif p.bgr:
        x = x[..., ::-1]
    p.channels_ok(x.shape[-1])
    x = (x * p.scale - np.asarray(p.mean)) / np.asarray(p.std)
    if p.layout != "NHWC":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=dtype)


def to_display(x: np.ndarray, p: Preprocess) -> np.ndarray:
    """Invert :func:`to_tensor` for one item -> RGB uint8 [H, W, 3].

    Values that do not map back into 0..255 (an array preprocessed some other way) are
    min-max stretched instead, so something sensible is always shown.
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if x.ndim != 3:
        raise OnnxplainError(f"cannot show an item of shape {list(x.shape)} as an image")
    if p.layout != "NHWC":
        x = x.transpose(1, 2, 0)
    c = x.shape[-1]
    mean = np.asarray(p.mean) if len(p.mean) in (1, c) else np.zeros(1)
    std = np.asarray(p.std) if len(p.std) in (1, c) else np.ones(1)
    pix = (x * std + mean) / p.scale
    if c == 3 and p.bgr:
        pix = pix[..., ::-1]
    if c == 1:
        pix = np.repeat(pix, 3, axis=-1)
    elif c != 3:
        pix = np.repeat(pix.mean(axis=-1, keepdims=True), 3, axis=-1)
    lo, hi = float(pix.min()), float(pix.max())
    if lo < -1 or hi > 256:  # not this recipe's numbers: stretch
        pix = (pix - lo) / max(hi - lo, 1e-12) * 255
    return np.clip(np.rint(pix), 0, 255).astype(np.uint8)


@dataclass
class Item:
    """One input to explain: the model tensor (no batch axis) and the image to draw on."""

    name: str  # file stem, made unique
    source: Path
    tensor: np.ndarray
    display: np.ndarray | None  # RGB uint8 [H, W, 3], or None for non-image inputs
    photo: np.ndarray | None = None  # the photo itself (at most PHOTO_MAX on its long side), image files only
    geometry: Geometry | None = None  # how ``display`` sits on ``photo``


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_items(
    paths, p: Preprocess | None, shape, dtype=np.float32, integer: bool = False, max_memory: int | None = None
) -> list[Item]:
    """Load images and ``.npy`` arrays; ``p`` must be resolved with :func:`for_model` for images.

    A ``.npy`` file holds one preprocessed item (the input's shape without the batch axis) or a
    batch of them; a batch of N gives items ``<stem>_0`` .. ``<stem>_{N-1}``.
    """
    rank = None if shape is None else len(shape)
    items: list[Item] = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".npy":
            arr = _load_npy(path, integer)
            if arr.size == 0:
                raise OnnxplainError(f"{path}: the array is empty (shape {list(arr.shape)}); nothing to explain")
            if rank is not None and arr.ndim == rank - 1:
                arr = arr[None]
            if rank is not None and arr.ndim != rank:
                raise OnnxplainError(
                    f"{path}: array of shape {list(arr.shape)} does not fit the model input "
                    f"{_fmt(shape)} (with or without the batch axis)"
                )
            for i, a in enumerate(arr):
                name = path.stem if len(arr) == 1 else f"{path.stem}_{i}"
                disp = None
                if p is not None and a.ndim == 3 and p.layout is not None:
                    c = a.shape[0] if p.layout == "NCHW" else a.shape[-1]
                    if c in (1, 3):
                        disp = to_display(a, p)
                items.append(Item(name, path, np.asarray(a), disp))
        else:
            if p is None:
                raise OnnxplainError(f"{path}: image files need a rank-4 image input; pass a preprocessed .npy array")
            photo = load_image(path, max_memory)
            rgb, geometry = fit(photo, p.size, p.resize)
            k = max(photo.shape[:2]) / PHOTO_MAX
            if k > 1:
                photo = resize(photo, (max(1, int(photo.shape[0] / k)), max(1, int(photo.shape[1] / k))))
            items.append(Item(path.stem, path, to_tensor(rgb, p, channels_of(p, shape), dtype), rgb, photo, geometry))
    _unique_names(items)
    return items


def _load_npy(path: Path, integer: bool = False) -> np.ndarray:
    if not path.is_file():
        raise OnnxplainError(f"no such file: {path}")
    try:
        arr = _read_npy(path)
    except OnnxplainError:
        raise
    except Exception as exc:
        why = " ".join(str(exc).split())[:160] if isinstance(exc, ValueError) else type(exc).__name__
        raise OnnxplainError(f"cannot read {path} as a .npy array ({why})") from None
    if not isinstance(arr, np.ndarray):
        raise OnnxplainError(f"{path} does not hold a single array")
    if integer and not np.issubdtype(arr.dtype, np.integer):
        raise OnnxplainError(f"{path}: the model takes integers (token ids), got {arr.dtype}")
    if not integer and not np.issubdtype(arr.dtype, np.floating):
        raise OnnxplainError(f"{path}: array must be float, got {arr.dtype}")
    return arr


def _read_npy(path: Path) -> np.ndarray:
    """``np.load`` after a look at the header: its shape is checked against the memory budget and the
    file's size before anything is allocated (a 100-byte file can claim a terabyte)."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > path.stat().st_size - offset:
        raise ValueError(f"the header claims {nbytes} bytes of data, the file holds fewer")
    check_bytes(nbytes, None, f"reading {path.name}")
    return np.load(path, allow_pickle=False)


def _unique_names(items: list[Item]) -> None:
    seen: dict[str, int] = {}
    for it in items:
        base = it.name
        k = seen.get(base, 0)
        seen[base] = k + 1
        if k:
            while f"{base}-{k}" in seen:
                k += 1
            it.name = f"{base}-{k}"
            seen[it.name] = 1


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"
