"""Where the items of a dataset run come from, cut into shards, and how one shard is read.

A source is a folder of images (searched recursively), a set of Parquet, ``.npz`` or ``.npy`` files (or a
folder of them) with an ``image`` column, or a :class:`ray.data.Dataset` with an ``image`` column. File
sources are cut on the driver into :class:`Shard` descriptors of at most ``shard_size`` items (by default
about four million input values each: :func:`default_shard_size`); an actor
reads its shard itself, so images are decoded where they are explained, never on the driver. A shard's
name holds a hash of its item ids: a resumed run skips exactly the shards whose output exists.

Columns: ``image`` (a model-ready float array, or the bytes of an encoded image file), optional
``label`` (int), ``mask`` ([H, W] bool, for the localisation metrics) and ``id`` (a string; default:
the file name and row).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.io.preprocess import IMAGE_SUFFIXES

TABLE_SUFFIXES = (".parquet", ".npz", ".npy")


@dataclass(frozen=True)
class Shard:
    """A piece of work: ``kind`` "images" (``paths`` are image files, ids relative to ``root``) or
    "parquet"/"npz"/"npy" (rows ``start:stop`` of the one file in ``paths``)."""

    name: str
    kind: str
    paths: tuple
    root: str = ""
    start: int = 0
    stop: int = 0

    def to_row(self) -> dict:
        return {
            "shard": self.name,
            "kind": self.kind,
            "paths": "\n".join(self.paths),
            "root": self.root,
            "start": self.start,
            "stop": self.stop,
        }

    @staticmethod
    def from_row(row: dict) -> Shard:
        return Shard(
            str(row["shard"]),
            str(row["kind"]),
            tuple(str(row["paths"]).split("\n")),
            str(row["root"]),
            int(row["start"]),
            int(row["stop"]),
        )


@dataclass
class Items:
    """What a shard reads into memory: ``ids`` [n], ``images`` [n, ...] model-ready, optional ``labels`` [n]
    and ``masks`` [n, H, W]; ``errors`` are (id, reason) of the items that could not be read."""

    ids: list
    images: np.ndarray | None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    errors: list | None = None

    def take(self, keep: list) -> Items:
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return Items([self.ids[i] for i in keep], pick(self.images), pick(self.labels), pick(self.masks), [])


def digest(ids) -> str:
    return hashlib.sha1("\n".join(map(str, ids)).encode()).hexdigest()[:10]


#: the default shard: about this many input values (16 MB of float32), so that small images make bigger
#: shards (a shard's fixed cost, a Ray call and a Parquet file, stays small beside its compute)
SHARD_VALUES = 1 << 22
SHARD_LIMITS = (16, 1024)  # items per default shard
MIN_SHARDS = 8  # a small dataset is still cut into this many shards (load balance over the actors)


def default_shard_size(item_values: int | None, total: int | None = None) -> int:
    """Items per shard when the user gives none: ``SHARD_VALUES / item_values`` (64 when the item's size is
    unknown), at most ``total / MIN_SHARDS``, within ``SHARD_LIMITS``. 64 x 64 RGB images: 341 (a dataset of
    256: 32); 224 x 224: 27. Depends only on the model and the source, so that a resumed run cuts the same
    shards."""
    size = 64 if not item_values else SHARD_VALUES // int(item_values)
    if total:
        size = min(size, -(-int(total) // MIN_SHARDS))
    return int(min(SHARD_LIMITS[1], max(SHARD_LIMITS[0], size)))


def plan(source, shard_size) -> tuple[list[Shard], str]:
    """The shards of a file source and a one-line description of it. ``shard_size``: items per shard, or a
    function of the number of items that returns it."""
    if isinstance(shard_size, int) and shard_size < 1:
        raise OnnxplainError("shard_size must be at least 1")
    size_of = shard_size if callable(shard_size) else lambda total: shard_size
    paths = [Path(s) for s in ([source] if isinstance(source, (str, Path)) else source)]
    for p in paths:
        if not p.exists():
            raise OnnxplainError(f"no such file or folder: {p}")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        tables = [f for f in files if f.suffix.lower() in TABLE_SUFFIXES]
        if images:
            size = size_of(len(images))
            shards = []
            for i in range(0, len(images), size):
                chunk = images[i : i + size]
                ids = [f.relative_to(folder).as_posix() for f in chunk]
                shards.append(
                    Shard(
                        f"shard-{i // size:05d}-{digest(ids)}",
                        "images",
                        tuple(str(f) for f in chunk),
                        str(folder),
                    )
                )
            return shards, f"{len(images)} images in {folder}"
        if not tables:
            raise OnnxplainError(
                f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and no "
                f"{', '.join(TABLE_SUFFIXES)} files"
            )
        paths = tables
    counts = []
    for f in paths:
        kind = f.suffix.lower().lstrip(".")
        if f.is_dir() or "." + kind not in TABLE_SUFFIXES:
            raise OnnxplainError(f"{f}: give a folder of images, or .parquet, .npz or .npy files")
        counts.append(count_rows(f))
    total = sum(counts)
    size = size_of(total)
    shards = []
    for f, n in zip(paths, counts):
        kind = f.suffix.lower().lstrip(".")
        for start in range(0, n, size):
            stop = min(n, start + size)
            name = f"shard-{len(shards):05d}-{digest([f.resolve(), start, stop, f.stat().st_size])}"
            shards.append(Shard(name, kind, (str(f),), str(f.parent), start, stop))
    return shards, f"{total} items in {len(paths)} {paths[0].suffix} file(s)"


def count_rows(f: Path) -> int:
    kind = f.suffix.lower()
    try:
        if kind == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(f)
            if "image" not in meta.schema_arrow.names:
                raise OnnxplainError(f"{f} has no 'image' column (columns: {', '.join(meta.schema_arrow.names)})")
            return meta.metadata.num_rows
        if kind == ".npy":
            return int(np.load(f, mmap_mode="r", allow_pickle=False).shape[0])
        with np.load(f, allow_pickle=False) as z:
            key = _image_key(z.files, f)
            return int(z[key].shape[0])
    except OnnxplainError:
        raise
    except Exception as exc:  # noqa: BLE001 -- an unreadable file is the user's
        raise OnnxplainError(f"cannot read {f}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None


def _image_key(keys, f) -> str:
    for key in ("image", "images", "x"):
        if key in keys:
            return key
    raise OnnxplainError(f"{f} has no 'image' array (keys: {', '.join(keys) or 'none'})")


# ---- reading a shard (in the actor) --------------------------------------------------------------
def read_shard(shard: Shard, recipe, shape, dtype=np.float32) -> Items:
    """Load a shard's items; an unreadable item becomes an error, never the shard's end."""
    if shard.kind == "images":
        root = Path(shard.root)
        rows = [{"id": Path(p).relative_to(root).as_posix(), "path": p} for p in shard.paths]
        return to_items(rows, recipe, shape, dtype)
    f = Path(shard.paths[0])
    cols: dict = {}
    if shard.kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(f).slice(shard.start, shard.stop - shard.start)
        cols = {name: _column(table.column(name)) for name in table.column_names}
    elif shard.kind == "npy":
        cols["image"] = np.asarray(np.load(f, mmap_mode="r", allow_pickle=False)[shard.start : shard.stop])
    else:
        z = _npz(str(f), f.stat().st_mtime_ns)
        cols["image"] = z[_image_key(list(z), f)][shard.start : shard.stop]
        for key, names in (("label", ("label", "labels", "y")), ("mask", ("mask", "masks")), ("id", ("id", "ids"))):
            hit = next((k for k in names if k in z), None)
            if hit is not None:
                cols[key] = z[hit][shard.start : shard.stop]
    n = len(cols["image"])
    ids = cols.get("id")
    if ids is None:
        ids = [f"{f.name}:{shard.start + i}" for i in range(n)]
    whole = stacked(cols, ids, dtype)
    if whole is not None:
        return whole
    rows = [
        {"id": str(ids[i]), "image": cols["image"][i], **{k: cols[k][i] for k in ("label", "mask") if k in cols}}
        for i in range(n)
    ]
    return to_items(rows, recipe, shape, dtype)


def stacked(cols: dict, ids, dtype) -> Items | None:
    """The items of ``.npz``/``.npy`` columns that are already one float array (the common case) without
    going item by item: what :func:`to_items` would make of them, or None when it must go item by item."""
    images = cols["image"]
    if not isinstance(images, np.ndarray) or images.ndim < 2 or not np.issubdtype(images.dtype, np.floating):
        return None
    n = len(images)
    labels = cols.get("label")
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.number) or labels.size < n or not np.isfinite(labels).all():
            return None
        labels = labels.reshape(n, -1)[:, 0].astype(np.int64)
    masks = cols.get("mask")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.dtype == object or masks.ndim < 3:
            return None
        masks = masks.astype(bool).reshape(n, *masks.shape[-2:])
    return Items([str(i) for i in ids], np.ascontiguousarray(images, dtype=dtype), labels, masks, [])


@functools.lru_cache(maxsize=1)
def _npz(path: str, mtime: int) -> dict:
    """An .npz file's arrays, kept for the next shard of the same file (an .npz array is read whole)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _column(col):
    """A Parquet column as a list of per-row values (arrays for list/tensor columns, bytes for binary)."""
    import pyarrow as pa

    t = col.type
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
    ):
        return col.to_pylist()
    if isinstance(t, pa.ExtensionType):  # Ray's tensor columns
        return list(col.combine_chunks().to_numpy_ndarray())
    return [None if v is None else np.asarray(v) for v in col.to_numpy(zero_copy_only=False)]


def to_items(rows: list, recipe, shape, dtype=np.float32) -> Items:
    """Rows (``id`` and ``path`` or ``image``, optional ``label``, ``mask``) -> stacked model-ready arrays."""
    good, tensors, errors = [], [], []
    for row in rows:
        try:
            tensors.append(to_tensor(row, recipe, shape, dtype))
            good.append(row)
        except Exception as exc:  # noqa: BLE001 -- one bad item is recorded, the rest goes on
            errors.append((row["id"], one_line(exc)))
    if len({t.shape for t in tensors}) > 1:  # one batch holds one shape: the most common one stays
        from collections import Counter

        common = Counter(t.shape for t in tensors).most_common(1)[0][0]
        keep = [i for i, t in enumerate(tensors) if t.shape == common]
        errors += [
            (
                good[i]["id"],
                f"shape {list(t.shape)} differs from the shard's {list(common)} (resize the images, or give a size)",
            )
            for i, t in enumerate(tensors)
            if t.shape != common
        ]
        good, tensors = [good[i] for i in keep], [tensors[i] for i in keep]
    ids = [r["id"] for r in good]
    images = np.stack(tensors) if tensors else None
    labels = masks = None
    if good and all(r.get("label") is not None for r in good):
        labels = np.array([int(np.asarray(r["label"]).reshape(-1)[0]) for r in good], dtype=np.int64)
    if good and all(r.get("mask") is not None for r in good):
        masks = np.stack([np.asarray(r["mask"]).astype(bool).reshape(np.asarray(r["mask"]).shape[-2:]) for r in good])
    return Items(ids, images, labels, masks, errors)


def to_tensor(row: dict, recipe, shape, dtype) -> np.ndarray:
    from onnxplain.io import preprocess

    image = row.get("image")
    if image is None or isinstance(image, (bytes, bytearray, memoryview)):
        if recipe is None:
            raise OnnxplainError("an encoded image, but the model input is not an image (NCHW or NHWC)")
        if image is None:
            rgb = preprocess.load_image(row["path"])
        else:
            rgb = decode(bytes(image), row["id"])
        rgb = preprocess.resize(rgb, recipe.size)
        return preprocess.to_tensor(rgb, recipe, preprocess.channels_of(recipe, shape), dtype)
    a = np.asarray(image)
    if not np.issubdtype(a.dtype, np.floating):
        raise OnnxplainError(f"image must be float (model-ready) or encoded bytes, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def decode(data: bytes, name: str) -> np.ndarray:
    import io

    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # noqa: BLE001
        raise OnnxplainError(
            f"cannot decode image {name}: {' '.join(str(exc).split()) or type(exc).__name__}"
        ) from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, OnnxplainError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
