"""The output folder of a dataset run, written shard by shard and atomically.

::

    OUT/run.json                  what was run (model digest, methods, options); a resumed run must match
    OUT/maps/<shard>.parquet      explain: one row per item and method (id, method, prediction, target,
                                  score, shape, attribution as a flat float32 list)
    OUT/eval/<shard>.npz          evaluate: the shard's per-image metric values and perturbation curves
    OUT/errors/<shard>.parquet    items that failed: id, stage (reading or a method), one-line reason
    OUT/errors.csv, summary.json  every error so far, and the run's counts (written at the end)

Every file is written under a hidden temporary name in its folder and renamed, so a killed run leaves
whole shards only; a shard's result file is written last, and its presence is what a resumed run skips.
There is no ``fsync`` per shard (it cost as much as the Parquet encoding): a machine that loses power
can leave a renamed file whose data never reached the disk, so a resumed run counts a shard as written
only when its file ends as a whole Parquet (``PAR1``) or zip (``.npz``) file does, and writes it again
otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.io.render import save_text

MAP_COLUMNS = ("id", "method", "prediction", "target", "score", "shape", "attribution")
ERROR_COLUMNS = ("id", "stage", "reason")
#: what a run writes in its output folder (files and subfolders); inputs there are refused
OUTPUT_NAMES = (
    "run.json",
    "maps",
    "eval",
    "errors",
    "errors.csv",
    "summary.json",
    "evaluation.csv",
    "evaluation.json",
    "evaluation.md",
)


def prepare(out, config: dict, inputs: list, resume: bool = True) -> Path:
    """Create ``out`` (never the source folder or inside it, never over an input); check that an existing
    run there is the same run (``config``), else refuse."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OnnxplainError(f"the output {out} exists and is not a folder")
    o = out.resolve()
    ours = {o / name for name in OUTPUT_NAMES}
    for src in inputs:
        if src is None:
            continue
        src = Path(src).resolve()
        if src.is_dir() and (o == src or src in o.parents):
            raise OnnxplainError(f"the output folder {out} is inside the input folder {src}; choose another one")
        if src in ours or any(p in ours for p in src.parents):
            raise OnnxplainError(f"the output folder {out} would write over the input {src}; choose another one")
    out.mkdir(parents=True, exist_ok=True)
    run = out / "run.json"
    if run.exists():
        try:
            before = json.loads(run.read_text(encoding="utf-8"))
        except ValueError:
            before = None
        if before != json.loads(json.dumps(config)):
            if not resume:
                raise OnnxplainError(f"{out} holds another run; choose another output folder")
            changed = sorted(k for k in set(config) | set(before or {}) if (before or {}).get(k) != config.get(k))
            raise OnnxplainError(
                f"{out} holds a run with other settings "
                f"({', '.join(changed) or 'unreadable run.json'}); choose another output folder"
            )
        if not resume:
            raise OnnxplainError(f"{out} holds this run already; resume it or choose another output folder")
    else:
        save_text(json.dumps(config, indent=1, sort_keys=True), run)
    return out


def done(out: Path, sub: str, suffix: str) -> set:
    """The shard names whose result file in ``out/sub`` is whole (see the module docstring)."""
    folder = Path(out) / sub
    if not folder.is_dir():
        return set()
    return {
        f.name[: -len(suffix)]
        for f in folder.iterdir()
        if f.name.endswith(suffix) and not f.name.startswith(".") and whole(f)
    }


def whole(f: Path) -> bool:
    """A Parquet file ends with its footer and ``PAR1``; an ``.npz`` with a zip central directory."""
    try:
        if f.suffix == ".npz":
            return zipfile.is_zipfile(f)
        with open(f, "rb") as fh:
            if fh.seek(0, os.SEEK_END) < 12:
                return False
            fh.seek(-4, os.SEEK_END)
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def write_shard_file(path: Path, write) -> Path:
    """``write(tmp_path)``, then rename over ``path``: a hidden temporary name in the same folder (one per
    process), removed again if ``write`` fails. The actor's lean version of
    :func:`onnxplain.io.outputs.write_atomic`: no per-file checks of the output folder (the driver checked
    it once) and no ``fsync`` (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_table(columns: dict, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    # dictionary encoding and statistics of the float maps cost 10x the write itself and save nothing
    small = [k for k in columns if k not in ("attribution", "shape")]
    return write_shard_file(
        path, lambda tmp: pq.write_table(table, str(tmp), use_dictionary=small, write_statistics=small)
    )


def maps_columns(parts: list) -> dict:
    """Parts ``(method, ids [n], attributions [n, ...], predictions [n], targets [n], scores [n])`` -> the
    columns of a maps file, one row per item and method; each part's maps are one float32 buffer, passed
    to Arrow without a copy."""
    import pyarrow as pa

    parts = [p for p in parts if len(p[1])]
    n = sum(len(p[1]) for p in parts)
    cat = lambda k, dtype: np.concatenate([np.asarray(p[k], dtype) for p in parts]) if parts else np.zeros(0, dtype)  # noqa: E731
    shapes = [np.asarray(p[2]).shape[1:] for p in parts for _ in range(len(p[1]))]
    return {
        "id": pa.array([str(i) for p in parts for i in p[1]], pa.string()),
        "method": pa.array([p[0] for p in parts for _ in range(len(p[1]))], pa.string()),
        "prediction": pa.array(cat(3, np.int64)),
        "target": pa.array(cat(4, np.int64)),
        "score": pa.array(cat(5, np.float64)),
        "shape": pa.array([list(s) for s in shapes], pa.list_(pa.int32())) if n else pa.array([], pa.list_(pa.int32())),
        "attribution": flat_lists([p[2] for p in parts]),
    }


def flat_lists(batches: list):
    """Batches of maps ([n, ...] each) -> one Arrow list<float32> column, one list per map, built from one
    flat buffer and its offsets (no copy when there is one float32 batch)."""
    import pyarrow as pa

    flat = [np.ascontiguousarray(b, np.float32).reshape(len(b), -1) for b in batches]
    sizes = np.concatenate([np.full(len(b), b.shape[1], np.int64) for b in flat]) if flat else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if len(flat) == 1:
        values = flat[0].reshape(-1)
    else:
        values = np.concatenate([b.reshape(-1) for b in flat]) if flat else np.zeros(0, np.float32)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def error_columns(errors: list) -> dict:
    import pyarrow as pa

    return {k: pa.array([str(e[i]) for e in errors], pa.string()) for i, k in enumerate(ERROR_COLUMNS)}


def read_maps(out, method: str | None = None) -> dict:
    """``{(id, method): attribution}`` from a run's ``maps/`` (shaped as the Explainer gives it, one item)."""
    import pyarrow.parquet as pq

    result = {}
    for f in sorted((Path(out) / "maps").glob("*.parquet")):
        t = pq.read_table(f, columns=["id", "method", "shape", "attribution"]).to_pydict()
        for i, m, s, a in zip(t["id"], t["method"], t["shape"], t["attribution"]):
            if method is None or m == method:
                result[(i, m)] = np.asarray(a, dtype=np.float32).reshape(s)
    return result


def read_errors(out) -> list:
    """Every error row (id, stage, reason) recorded in ``out/errors/``."""
    import pyarrow.parquet as pq

    rows = []
    for f in sorted((Path(out) / "errors").glob("*.parquet")):
        t = pq.read_table(f).to_pydict()
        rows += [dict(zip(ERROR_COLUMNS, r)) for r in zip(*(t[k] for k in ERROR_COLUMNS))]
    return rows


def write_errors_csv(out: Path, rows: list) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ERROR_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return save_text(buf.getvalue(), Path(out) / "errors.csv")


# ---- evaluation shards: flat .npz (no pickle) ------------------------------------------------------
def pack_eval(ids: list, values: dict, curves: dict) -> dict:
    """Per-image values ``{key: {method: [n]}}`` and curves ``{key: {method: Curve}}`` as flat arrays."""
    d = {"ids": np.array(ids, dtype=str)}
    for key, by_method in values.items():
        for m, v in by_method.items():
            d[f"values|{key}|{m}"] = np.asarray(v, dtype=np.float64)
    for key, by_method in curves.items():
        for m, c in by_method.items():
            d[f"curves|{key}|{m}|fraction"] = np.asarray(c.fraction, dtype=np.float64)
            d[f"curves|{key}|{m}|scores"] = np.asarray(c.scores, dtype=np.float64)
    return d


def unpack_eval(d) -> tuple:
    from onnxplain.evaluation.metrics.faithfulness import Curve

    values, curves = {}, {}
    for k in d:
        parts = k.split("|")
        if parts[0] == "values":
            values.setdefault(parts[1], {})[parts[2]] = np.asarray(d[k])
        elif parts[0] == "curves" and parts[3] == "fraction":
            scores = np.asarray(d[f"curves|{parts[1]}|{parts[2]}|scores"])
            curves.setdefault(parts[1], {})[parts[2]] = Curve(np.asarray(d[k]), scores)
    return [str(i) for i in d["ids"]], values, curves


def merge_eval(parts: list) -> tuple:
    """Concatenate (ids, values, curves) parts in order."""
    ids, values, curves = [], {}, {}
    for p_ids, p_values, p_curves in parts:
        ids += p_ids
        for key, by_method in p_values.items():
            for m, v in by_method.items():
                values.setdefault(key, {}).setdefault(m, []).append(np.asarray(v))
        for key, by_method in p_curves.items():
            for m, c in by_method.items():
                curves.setdefault(key, {}).setdefault(m, []).append(c)
    from onnxplain.evaluation.metrics.faithfulness import Curve

    values = {k: {m: np.concatenate(v) for m, v in d.items()} for k, d in values.items()}
    curves = {
        k: {m: Curve(cs[0].fraction, np.concatenate([c.scores for c in cs])) for m, cs in d.items()}
        for k, d in curves.items()
    }
    return ids, values, curves


def save_npz(arrays: dict, path: Path) -> Path:
    def write(tmp: Path):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temporary name
            np.savez(f, **arrays)

    return write_shard_file(path, write)


def load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
