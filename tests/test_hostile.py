"""Untrusted models and inputs: never clobber, never a silent wrong answer, always exit 2.

Every case runs a command (in-process with CliRunner; in a subprocess where stderr at the file
descriptor level matters) or an API call with a bad input, and checks:

* exit code 2 (``OnnxplainError`` for the API), exactly one stderr line ``error: ...``;
* nothing left in the output location (no file, no temporary file, no folder it made);
* every input file (models, the files they reference, images, arrays, rule files) byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from PIL import Image
from typer.testing import CliRunner

from onnxplain import Explainer, OnnxplainError, save_model_atomic
from onnxplain.cli import app
from onnxplain.io import render
from onnxplain.io.outputs import Outputs

sys.path.insert(0, str(Path(__file__).parent))
from models import tiny_cnn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LONG = "n" * 250  # a valid name (255 bytes is the usual limit); its old temp name '.{name}.tmp{pid}' was not
TOO_LONG = "n" * 300


# ---- the inputs ----------------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=17):
    return h.make_model(
        h.make_graph(nodes, "m", inputs, outputs, list(inits)), opset_imports=[h.make_opsetid("", opset)], ir_version=8
    )


def _vi(name, shape, kind=T.FLOAT):
    return h.make_tensor_value_info(name, kind, shape)


def _png_header(path, width, height):
    """A valid PNG that claims width x height pixels (decoding it would need width*height*3 bytes)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _npy_header(path, shape):
    """An .npy file whose header claims ``shape`` but that holds no data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    header = header + " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())


def _external(folder: Path, location: str) -> Path:
    """tiny_cnn with its weights in ``folder/location``."""
    folder.mkdir(parents=True, exist_ok=True)
    m = tiny_cnn()
    onnx.save_model(
        m,
        str(folder / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return folder / "m.onnx"


def _set_location(model_path: Path, location: str) -> None:
    m = onnx.load(str(model_path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    model_path.write_bytes(m.SerializeToString())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile") / "inp"
    d.mkdir()
    r = np.random.default_rng(0)
    w = {"dir": d}
    onnx.save(tiny_cnn(), str(d / "tiny.onnx"))
    w["tiny"] = d / "tiny.onnx"
    np.save(d / "x.npy", r.random((1, 3, 8, 8)).astype(np.float32))
    np.save(d / "x4.npy", r.random((1, 4)).astype(np.float32))
    Image.fromarray((r.random((8, 8, 3)) * 255).astype(np.uint8)).save(d / "photo.png")
    # a model whose weights live in a file called like an export target, and one called like an explain output
    w["ext"] = _external(d / "ext", "weights.onnx")
    w["clash"] = _external(d / "clash", "x.gradient.npy")
    w["evalclash"] = _external(d / "evalclash", "evaluation.json")
    # class count known only at run time
    onnx.save(
        _model([h.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", ["N", "C"])], [_vi("y", ["N", "C"])]),
        str(d / "dyn.onnx"),
    )
    onnx.save(
        _model(
            [h.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0, name="pool")],
            [_vi("x", ["N", "C", 8, 8])],
            [_vi("y", ["N", "C"])],
        ),
        str(d / "dynimg.onnx"),
    )
    onnx.save(
        _model(
            [h.make_node("Add", ["x", "z"], ["y"], name="add")],
            [_vi("x", ["N", 4]), _vi("z", ["N", 4])],
            [_vi("y", ["N", 4])],
        ),
        str(d / "two.onnx"),
    )
    onnx.save(
        _model(
            [h.make_node("Relu", ["x"], ["y"], name="relu")],
            [_vi("x", ["N", 4], T.BFLOAT16)],
            [_vi("y", ["N", 4], T.BFLOAT16)],
        ),
        str(d / "bf16.onnx"),
    )
    fold = _model(
        [
            h.make_node("Reshape", ["c6", "bad"], ["r"], name="reshape"),
            h.make_node("Add", ["x", "r"], ["y"], name="add"),
        ],
        [_vi("x", ["N", 4])],
        [_vi("y", ["N", 4])],
        [nh.from_array(np.ones(6, np.float32), "c6"), nh.from_array(np.array([4, 4], np.int64), "bad")],
    )
    onnx.save(fold, str(d / "fold.onnx"))
    custom = h.make_model(
        h.make_graph(
            [
                h.make_node("Relu", ["x"], ["r"], name="relu"),
                h.make_node("Weird", ["r"], ["w"], name="weird", domain="my.dom"),
                h.make_node("Relu", ["w"], ["y"], name="relu2"),
            ],
            "m",
            [_vi("x", ["N", 4])],
            [_vi("y", ["N", None])],
        ),
        opset_imports=[h.make_opsetid("", 17), h.make_opsetid("my.dom", 1)],
        ir_version=8,
    )
    onnx.save(custom, str(d / "custom.onnx"))  # symbolic shape inference gives up on it (and used to leave files)

    def pooled(side):
        return _model(
            [
                h.make_node("Relu", ["x"], ["r"], name="relu"),
                h.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0, name="pool"),
            ],
            [_vi("x", ["N", 3, side, side])],
            [_vi("y", ["N", 3])],
        )

    onnx.save(pooled(12000), str(d / "big.onnx"))
    onnx.save(pooled(100000), str(d / "huge.onnx"))
    onnx.save(pooled(64), str(d / "pool64.onnx"))
    evil = tiny_cnn()
    evil.graph.node[0].name = "a" * 40 + "!"
    onnx.save(evil, str(d / "evilnames.onnx"))
    opset5 = tiny_cnn()
    opset5.opset_import[0].version = 5
    onnx.save(opset5, str(d / "opset5.onnx"))
    nonodes = _model([], [_vi("x", ["N", 4])], [_vi("x", ["N", 4])])
    (d / "nonodes.onnx").write_bytes(nonodes.SerializeToString())
    (d / "junk.onnx").write_bytes(r.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (d / "empty.onnx").write_bytes(b"")
    for name, loc in (
        ("abs", "/etc/passwd"),
        ("escape", "../tiny.onnx"),
        ("missing", "nope.bin"),
        ("nul", "w\0eights.bin"),
    ):
        _set_location(_external(d / f"ext_{name}", "weights.bin"), loc)
    trunc = _external(d / "ext_trunc", "weights.bin")
    (d / "ext_trunc" / "weights.bin").write_bytes(b"\0" * 16)
    w["trunc"] = trunc
    # arrays
    np.save(d / "empty.npy", np.zeros((0, 3, 8, 8), np.float32))
    np.save(d / "ints.npy", np.ones((1, 3, 8, 8), np.int64))
    np.save(d / "wrong.npy", np.ones((1, 3, 9, 9), np.float32))
    nan = r.random((1, 3, 8, 8)).astype(np.float32)
    nan[0, 1, 2, 3] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    _npy_header(d / "claims.npy", (100000, 3, 8, 8))
    _npy_header(d / "claims_huge.npy", (10**9, 3, 10**5, 10**5))
    _png_header(d / "bomb.png", 100000, 100000)
    (d / "junk.png").write_bytes(b"not a picture at all")
    (d / "folder.png").mkdir()
    # rule files
    rules = {
        "eps_nan": '[[rule]]\nops = ["Gemm"]\nrule = "epsilon"\nepsilon = nan',
        "eps_inf": '[[rule]]\nops = ["Gemm"]\nrule = "epsilon"\nepsilon = inf',
        "eps_big": '[[rule]]\nops = ["Gemm"]\nrule = "epsilon"\nepsilon = 1e999',
        "eps_hugeint": '[[rule]]\nops = ["Gemm"]\nrule = "epsilon"\nepsilon = ' + "9" * 5000,
        "gamma_nan": '[[rule]]\nops = ["Conv"]\nrule = "gamma"\ngamma = -nan',
        "deep": "x = " + "[" * 100000 + "]" * 100000,
        "deep_tables": "x = " + "{a = " * 5000 + "1" + "}" * 5000,
        "backref": '[[rule]]\nnames = ["(a)\\\\1"]\nrule = "guided"',
        "lookahead": '[[rule]]\nnames = ["(?=a)a"]\nrule = "guided"',
        "longpat": '[[rule]]\nnames = ["' + "a" * 5000 + '"]\nrule = "guided"',
        "catastrophic": '[[rule]]\nnames = ["(a+)+$"]\nrule = "epsilon"\n[[rule]]\nops = ["Gemm", "Conv"]\n'
        'rule = "epsilon"',
        "notutf8": None,
    }
    for name, text in rules.items():
        if text is not None:
            (d / f"{name}.toml").write_text(text)
    (d / "notutf8.toml").write_bytes(b"\xff\xfe\x00 name = 1")
    (d / "large.toml").write_text("# " + "x" * (2 << 20))
    (d / "rules_dir.toml").mkdir()
    (d / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    (d / "afile").write_text("a plain file")
    w["snapshot"] = snapshot(d)
    return w


def snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def cli(world):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    yield invoke
    assert snapshot(world["dir"]) == world["snapshot"], "an input file changed"


def user_error(res, *needles) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "internal error" not in lines[0], lines[0]
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def nothing_written(out: Path, before=None):
    if before is None:
        assert not out.exists(), sorted(p.name for p in out.iterdir()) if out.is_dir() else out
    else:
        assert snapshot(out) == before


# ---- the command-line battery ------------------------------------------------------------------------------
D = "{d}"  # the inputs folder
O = "{o}"  # a fresh output location that must stay absent  # noqa: E741

CLI_CASES = {
    # 1. never clobber: the model, its external data, files named like it
    "export onto the model": (["export", f"{D}/tiny.onnx", "-o", f"{D}/tiny.onnx"], "refusing"),
    "export onto its external data": (["export", f"{D}/ext/m.onnx", "-o", f"{D}/ext/weights.onnx"], "refusing"),
    "export onto a symlink to the model": (["export", f"{D}/tiny.onnx", "-o", "{link_model}"], "refusing"),
    "export onto a hard link to the data": (["export", f"{D}/ext/m.onnx", "-o", "{hardlink_data}"], "refusing"),
    "explain into the model folder (data named like an output)": (
        ["explain", f"{D}/clash/m.onnx", f"{D}/x.npy", "-d", f"{D}/clash"],
        "refusing",
    ),
    "explain with labels named like an output": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--labels", "{labels_clash}", "-d", "{labels_dir}"],
        "refusing",
    ),
    "explain through a symlinked folder onto the data": (
        ["explain", f"{D}/clash/m.onnx", f"{D}/x.npy", "-d", "{link_dir}"],
        "refusing",
    ),
    "evaluate into the folder of a model whose data is evaluation.json": (
        [
            "evaluate",
            f"{D}/evalclash/m.onnx",
            "shapes",
            "--n",
            "2",
            "-m",
            "gradient",
            "--metrics",
            "deletion",
            "-d",
            f"{D}/evalclash",
        ],
        "refusing",
    ),
    # 2. never a silent wrong answer
    "target beyond the run-time class count": (
        ["explain", f"{D}/dyn.onnx", f"{D}/x4.npy", "--target", "1000000000", "-d", O],
        "out of range",
    ),
    "target one past the run-time class count": (
        ["explain", f"{D}/dyn.onnx", f"{D}/x4.npy", "--target", "4", "-d", O],
        "4 classes",
    ),
    "target beyond the static class count": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-t", "5", "-d", O], "range"),
    "target -2": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-t", "-2", "-d", O], "range"),
    "target past the class count, black-box": (
        ["explain", f"{D}/dynimg.onnx", f"{D}/x.npy", "-m", "occlusion", "--target", "7", "-d", O],
        "range",
    ),
    "baseline nan": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "ig", "--baseline", "nan", "-d", O], "NaN"),
    "baseline inf": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "ig", "--baseline", "inf", "-d", O], None),
    "baseline -inf deeplift": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "deeplift", "--baseline", "-inf", "-d", O],
        None,
    ),
    "rules epsilon nan": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/eps_nan.toml", "-d", O],
        "epsilon",
    ),
    "rules epsilon inf": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/eps_inf.toml", "-d", O],
        "epsilon",
    ),
    "rules epsilon 1e999": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/eps_big.toml", "-d", O],
        "epsilon",
    ),
    "rules epsilon with 5000 digits": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/eps_hugeint.toml", "-d", O],
        "digits",
    ),
    "rules gamma -nan": (
        ["export", f"{D}/tiny.onnx", "-m", "lrp_epsilon", "--rules", f"{D}/gamma_nan.toml", "-o", f"{O}/g.onnx"],
        "gamma",
    ),
    "noise inf": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "smoothgrad", "--noise", "inf", "-d", O], "finite"),
    "noise nan": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "smoothgrad", "--noise", "nan", "-d", O], None),
    "noise negative": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "smoothgrad", "--noise", "-1", "-d", O], None),
    "samples 0": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "smoothgrad", "--samples", "0", "-d", O], None),
    "samples -3 lime": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lime", "--samples", "-3", "-d", O], None),
    "steps 0": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "ig", "--steps", "0", "-d", O], None),
    "steps 1.5": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "ig", "--steps", "1.5", "-d", O], None),
    "export steps 0": (["export", f"{D}/tiny.onnx", "-m", "ig", "--steps", "0", "-o", f"{O}/g.onnx"], None),
    "batch size 0": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--batch-size", "0", "-d", O], None),
    "class axis 9": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--class-axis", "9", "-d", O], "class_axis"),
    "class axis 0 (the batch)": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--class-axis", "0", "-d", O], "batch"),
    "class axis -3": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--class-axis", "-3", "-d", O], "class_axis"),
    "class axis 9, black-box": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "occlusion", "--class-axis", "9", "-d", O],
        "class_axis",
    ),
    "export class axis 9": (["export", f"{D}/tiny.onnx", "--class-axis", "9", "-o", f"{O}/g.onnx"], "class_axis"),
    "export class axis 9, dynamic classes": (
        ["export", f"{D}/dyn.onnx", "--class-axis", "7", "-o", f"{O}/g.onnx"],
        "class_axis",
    ),
    "alpha nan": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--alpha", "nan", "-d", O], None),
    "std 0": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--std", "0", "-d", O], "std"),
    "mean nan": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--mean", "nan", "-d", O], "finite"),
    "scale inf": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--scale", "inf", "-d", O], "finite"),
    "scale 1/0": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--scale", "1/0", "-d", O], None),
    "size 0": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--size", "0", "-d", O], "size"),
    "size -5": (["explain", f"{D}/tiny.onnx", f"{D}/photo.png", "--size", "-5", "-d", O], None),
    "input with NaN": (["explain", f"{D}/tiny.onnx", f"{D}/nan.npy", "-d", O], "NaN"),
    "occlusion window larger than the input": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "occlusion", "--window", "0", "-d", O],
        None,
    ),
    # 3. memory the model (or an option) asks for
    "model input 12000x12000 under a 1G limit": (
        ["explain", f"{D}/big.onnx", f"{D}/photo.png", "--max-memory", "1G", "-d", O],
        "memory limit",
    ),
    "model input 100000x100000 (default limit)": (
        ["explain", f"{D}/huge.onnx", f"{D}/photo.png", "-d", O],
        "memory limit",
    ),
    "size 100000": (["explain", f"{D}/pool64.onnx", f"{D}/photo.png", "--size", "100000", "-d", O], "memory limit"),
    "size 60000 under 8G": (
        ["explain", f"{D}/pool64.onnx", f"{D}/photo.png", "--size", "60000", "--max-memory", "8G", "-d", O],
        "memory limit",
    ),
    "png claiming 100000x100000": (["explain", f"{D}/tiny.onnx", f"{D}/bomb.png", "-d", O], None),
    "npy header claiming data it lacks": (["explain", f"{D}/tiny.onnx", f"{D}/claims.npy", "-d", O], "header"),
    "npy header claiming 10^20 values": (["explain", f"{D}/tiny.onnx", f"{D}/claims_huge.npy", "-d", O], None),
    "batch over the memory limit": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--max-memory", "2K", "-d", O],
        "memory limit",
    ),
    "max-memory abc": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--max-memory", "abc", "-d", O], "max-memory"),
    "max-memory 0": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--max-memory", "0", "-d", O], "max-memory"),
    "max-memory -5G": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--max-memory", "-5G", "-d", O], "max-memory"),
    "max-memory nan": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--max-memory", "nan", "-d", O], "max-memory"),
    # 4. user errors that were internal errors
    "parent of -o is a file": (["export", f"{D}/tiny.onnx", "-o", f"{D}/afile/g.onnx"], "not a folder"),
    "parent of -d is a file": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-d", f"{D}/afile/out"], "not a folder"),
    "-d is a file": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-d", f"{D}/afile"], "not a folder"),
    "-o is a folder": (["export", f"{D}/tiny.onnx", "-o", "{onnx_dir}"], "directory"),
    "300-char output name": (["export", f"{D}/tiny.onnx", "-o", f"{O}/{TOO_LONG}.onnx"], "too long"),
    "300-char output folder": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-d", f"{O}/{TOO_LONG}"], "too long"),
    "300-char model name": (["export", f"{D}/{TOO_LONG}.onnx", "-o", f"{O}/g.onnx"], None),
    "300-char image name": (["explain", f"{D}/tiny.onnx", f"{D}/{TOO_LONG}.png", "-d", O], None),
    "NUL in an external-data location": (["explain", f"{D}/ext_nul/m.onnx", f"{D}/x.npy", "-d", O], "NUL"),
    "absolute external-data location": (["explain", f"{D}/ext_abs/m.onnx", f"{D}/x.npy", "-d", O], "relative"),
    "external data outside the folder": (["export", f"{D}/ext_escape/m.onnx", "-o", f"{O}/g.onnx"], "outside"),
    "missing external data": (["explain", f"{D}/ext_missing/m.onnx", f"{D}/x.npy", "-d", O], "does not exist"),
    "truncated external data": (["explain", f"{D}/ext_trunc/m.onnx", f"{D}/x.npy", "-d", O], None),
    "empty .npy batch": (["explain", f"{D}/tiny.onnx", f"{D}/empty.npy", "-d", O], "empty"),
    "integer .npy": (["explain", f"{D}/tiny.onnx", f"{D}/ints.npy", "-d", O], "float"),
    "object .npy": (["explain", f"{D}/tiny.onnx", f"{D}/obj.npy", "-d", O], None),
    "garbage .npy": (["explain", f"{D}/tiny.onnx", f"{D}/junk.npy", "-d", O], None),
    "wrong-shape .npy": (["explain", f"{D}/tiny.onnx", f"{D}/wrong.npy", "-d", O], None),
    "garbage image": (["explain", f"{D}/tiny.onnx", f"{D}/junk.png", "-d", O], None),
    "image is a folder": (["explain", f"{D}/tiny.onnx", f"{D}/folder.png", "-d", O], None),
    "model with two inputs": (["explain", f"{D}/two.onnx", f"{D}/x4.npy", "-d", O], None),
    "model with two inputs, black-box": (["explain", f"{D}/two.onnx", f"{D}/x4.npy", "-m", "occlusion", "-d", O], None),
    "constant folding fails": (["explain", f"{D}/fold.onnx", f"{D}/x4.npy", "-d", O], None),
    "garbage model": (["explain", f"{D}/junk.onnx", f"{D}/x.npy", "-d", O], "not a valid ONNX model"),
    "empty model file": (["export", f"{D}/empty.onnx", "-o", f"{O}/g.onnx"], None),
    "model is a folder": (["export", f"{D}/ext", "-o", f"{O}/g.onnx"], "not a file"),
    "model without nodes": (["inspect", f"{D}/nonodes.onnx"], "no graph nodes"),
    "opset 5": (["explain", f"{D}/opset5.onnx", f"{D}/x.npy", "-d", O], "opset"),
    "TOML nested 100000 deep": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/deep.toml", "-d", O],
        "nested",
    ),
    "TOML tables nested 5000 deep": (
        ["export", f"{D}/tiny.onnx", "-m", "lrp_epsilon", "--rules", f"{D}/deep_tables.toml", "-o", f"{O}/g.onnx"],
        "nested",
    ),
    "rules file not UTF-8": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/notutf8.toml", "-d", O],
        "TOML",
    ),
    "rules file of 2 MB": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/large.toml", "-d", O],
        "too large",
    ),
    "rules file is a folder": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "lrp_epsilon", "--rules", f"{D}/rules_dir.toml", "-d", O],
        None,
    ),
    "labels file is a folder": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--labels", f"{D}/ext", "-d", O], None),
    "unknown method": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "gradientt", "-d", O], "did you mean"),
    "option of another method": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "--steps", "4", "-d", O], "--steps"),
    "export of a black-box method": (["export", f"{D}/tiny.onnx", "-m", "lime", "-o", f"{O}/g.onnx"], None),
    "export without .onnx": (["export", f"{D}/tiny.onnx", "-o", f"{O}/g.bin"], ".onnx"),
    "evaluate with a bad metric": (["evaluate", f"{D}/tiny.onnx", "shapes", "--metrics", "nope", "-d", O], None),
    "evaluate a garbage shuffled model": (
        [
            "evaluate",
            f"{D}/tiny.onnx",
            "shapes",
            "--n",
            "2",
            "-m",
            "gradient",
            "--metrics",
            "data_randomisation",
            "--shuffled-model",
            f"{D}/junk.onnx",
            "-d",
            O,
        ],
        None,
    ),
    "evaluate data that is not an npz": (["evaluate", f"{D}/tiny.onnx", f"{D}/x.npy", "-d", O], None),
    "inspect a 300-char path": (["inspect", f"{D}/{TOO_LONG}.onnx"], None),
    # 5. no partial outputs
    "second method refused": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "gradient", "-m", "gradcam", "--layer", "fc", "-d", O],
        None,
    ),
    "second method fails at run time": (
        ["explain", f"{D}/dyn.onnx", f"{D}/x4.npy", "-m", "saliency", "-m", "gradient", "-t", "9", "-d", O],
        "range",
    ),
    "second image fails": (["explain", f"{D}/tiny.onnx", f"{D}/x.npy", f"{D}/nan.npy", "-d", O], "NaN"),
    # 8. rule-file regexes
    "backreference in a name pattern": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "guided_backprop", "--rules", f"{D}/backref.toml", "-d", O],
        "regular expression",
    ),
    "lookahead in a name pattern": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "guided_backprop", "--rules", f"{D}/lookahead.toml", "-d", O],
        "regular expression",
    ),
    "5000-character name pattern": (
        ["explain", f"{D}/tiny.onnx", f"{D}/x.npy", "-m", "guided_backprop", "--rules", f"{D}/longpat.toml", "-d", O],
        "too long",
    ),
}


def _fill(arg: str, world, tmp_path: Path) -> str:
    d = world["dir"]
    extra = world["extra"](tmp_path)
    return arg.replace(D, str(d)).replace(O, str(tmp_path / "out")).format(**extra) if "{" in arg else arg


@pytest.fixture(scope="module")
def extras(world):
    """Paths some cases need, made once: links, a folder named like a model file."""
    d = world["dir"].parent / "aux"
    d.mkdir()
    (d / "link.onnx").symlink_to(world["tiny"])
    os.link(world["dir"] / "ext" / "weights.onnx", d / "hard.onnx")
    (d / "dir.onnx").mkdir()
    (d / "linkdir").symlink_to(world["dir"] / "clash", target_is_directory=True)
    labels = d / "labels"
    labels.mkdir()
    shutil.copy(world["dir"] / "labels.txt", labels / "x.gradient.png")
    vals = {
        "link_model": d / "link.onnx",
        "hardlink_data": d / "hard.onnx",
        "onnx_dir": d / "dir.onnx",
        "link_dir": d / "linkdir",
        "labels_clash": labels / "x.gradient.png",
        "labels_dir": labels,
    }
    world["extra"] = lambda tmp: {k: str(v) for k, v in vals.items()}
    return d


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_case(cli, world, extras, tmp_path, name):
    args, needle = CLI_CASES[name]
    before_aux = snapshot(extras)
    res = cli(*[_fill(a, world, tmp_path) for a in args])
    user_error(res, *([needle] if needle else []))
    nothing_written(tmp_path / "out")
    assert snapshot(extras) == before_aux
    assert not list(Path.cwd().glob("sym_shape_infer_temp*"))


# ---- cases that need a subprocess: file-descriptor stderr, signals, other users, mounts --------------------
def run_cli(*args, cwd=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ONNXPLAIN_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "onnxplain", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def one_line(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "internal error" not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "name,args",
    [
        ("constant folding fails (onnxruntime logs)", ["explain", "fold.onnx", "x4.npy"]),
        ("two inputs", ["explain", "two.onnx", "x4.npy", "-m", "gradient,occlusion"]),
        (
            "TOML nested 100000 deep",
            ["export", "tiny.onnx", "-m", "lrp_epsilon", "--rules", "deep.toml", "-o", "g.onnx"],
        ),
        ("png bomb (Pillow)", ["explain", "tiny.onnx", "bomb.png"]),
        ("shape inference gives up (its temp files)", ["explain", "custom.onnx", "x4.npy"]),
        (
            "ragged TOML and a missing rule",
            ["export", "tiny.onnx", "-m", "lrp_epsilon", "--rules", "notutf8.toml", "-o", "g.onnx"],
        ),
    ],
)
def test_one_stderr_line_at_the_fd_level(world, tmp_path, name, args):
    """A subprocess, so that onnxruntime's C++ log, onnx/Pillow warnings and graphsurgeon lines would show."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for p in world["dir"].iterdir():
        (cwd / p.name).symlink_to(p)
    listing = sorted(p.name for p in cwd.iterdir())
    if args[0] == "explain":
        args = args + ["-d", tmp_path / "out"]
    proc = run_cli(*args, cwd=cwd)
    one_line(proc)
    assert "[W]" not in proc.stdout and "onnxruntime" not in proc.stdout, proc.stdout
    assert sorted(p.name for p in cwd.iterdir()) == listing  # no sym_shape_infer_temp.onnx, no <uuid>.data
    nothing_written(tmp_path / "out")
    assert snapshot(world["dir"]) == world["snapshot"]


def test_bfloat16_model_is_explained_without_a_word_on_stderr(world, tmp_path):
    """bfloat16 models are computed in float32 inside (graphsurgeon and onnx warn about them): nothing leaks."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for p in world["dir"].iterdir():
        (cwd / p.name).symlink_to(p)
    proc = run_cli("explain", "bf16.onnx", "x4.npy", "-d", tmp_path / "out", cwd=cwd)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "out" / "x4.gradient.npy").is_file()
    assert snapshot(world["dir"]) == world["snapshot"]


def test_ctrl_c_removes_temporaries_and_says_interrupted(world, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onnxplain",
            "explain",
            str(world["tiny"]),
            str(world["dir"] / "x.npy"),
            "-m",
            "gradient",
            "-m",
            "lime",
            "--samples",
            "5000000",
            "--batch-size",
            "1",
            "-d",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out.is_dir() and any(out.iterdir())):  # the gradient files are staged
        time.sleep(0.2)
    assert out.is_dir() and any(p.name.startswith(".onnxplain-") for p in out.iterdir())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["error: interrupted"]
    nothing_written(out)
    assert snapshot(world["dir"]) == world["snapshot"]


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (root and mount(8) needed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill_disk(mnt: Path, leave: int) -> None:
    free = shutil.disk_usage(mnt).free
    (mnt / "ballast").write_bytes(b"\0" * max(0, free - leave))


def test_full_disk_before_the_work(world, tmpfs, cli, tmp_path):
    """A 2.5 MB model does not fit a 1 MiB disk: refused before anything runs."""
    big = tmp_path / "heavy.onnx"
    m = tiny_cnn()
    m.graph.initializer.append(nh.from_array(np.zeros(600_000, np.float32), "unused"))
    onnx.save(m, str(big))
    user_error(cli("export", big, "-o", tmpfs / "g.onnx"), "free space")
    assert sorted(p.name for p in tmpfs.iterdir()) == []


def test_full_disk_while_writing(world, tmpfs, cli):
    """A disk that fills up mid-run (ENOSPC from the writes): one line, no file, no temporary file."""
    _fill_disk(tmpfs, 0)
    before = snapshot(tmpfs)
    user_error(
        cli(
            "explain",
            world["tiny"],
            world["dir"] / "x.npy",
            world["dir"] / "photo.png",
            "-m",
            "gradient,saliency",
            "-d",
            tmpfs / "out",
        ),
        "space",
    )
    assert snapshot(tmpfs) == before
    user_error(
        cli(
            "evaluate",
            world["dir"] / "pool64.onnx",
            "shapes",
            "--n",
            "2",
            "-m",
            "gradient",
            "--metrics",
            "deletion",
            "-d",
            tmpfs / "eval",
        ),
        "space",
    )  # used to leave an empty or half-filled folder
    assert snapshot(tmpfs) == before
    (tmpfs / "ballast").unlink()
    _fill_disk(tmpfs, 0)
    user_error(cli("export", world["tiny"], "-o", tmpfs / "g.onnx"))
    assert sorted(p.name for p in tmpfs.iterdir()) == ["ballast"]


def test_read_only_mount(world, tmp_path, cli):
    """A read-only file system (EROFS), as root."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip()}")
    try:
        user_error(cli("explain", world["tiny"], world["dir"] / "x.npy", "-d", mnt / "out"), "read-only")
        user_error(cli("export", world["tiny"], "-o", mnt / "g.onnx"), "read-only")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_folder_as_nobody(world, tmp_path):
    """A folder the user may not write (permissions; root would ignore them): run as 'nobody'."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run as another user")
    probe = subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", "import onnxruntime"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"'nobody' cannot run this Python ({sys.executable}): {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    base = Path(tempfile_dir())
    try:
        for name in ("tiny.onnx", "x.npy"):
            shutil.copy(world["dir"] / name, base / name)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run(
            [
                setpriv,
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-m",
                "onnxplain",
                "explain",
                str(base / "tiny.onnx"),
                str(base / "x.npy"),
                "-d",
                str(locked / "out"),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(base),
        )
        assert "permission denied" in one_line(r)
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile

    d = tempfile.mkdtemp(prefix="onnxplain-nobody-")
    os.chmod(d, 0o755)
    return d


# ---- what must work on hostile names ---------------------------------------------------------------------
def test_long_valid_output_name_works(cli, world, tmp_path):
    """A 250-byte name is valid; the temporary file's name no longer grows with it."""
    res = cli("export", world["tiny"], "-o", tmp_path / f"{LONG[:245]}.onnx")
    assert res.exit_code == 0, res.output
    assert [p.name for p in tmp_path.iterdir()] == [f"{LONG[:245]}.onnx"]


def test_catastrophic_pattern_against_a_hostile_node_name(cli, world, tmp_path):
    """(a+)+$ against 'aaaa...a!' takes exponential time in a backtracking engine; RE2 is linear."""
    t0 = time.perf_counter()
    res = cli(
        "export",
        world["dir"] / "evilnames.onnx",
        "-m",
        "lrp_epsilon",
        "--rules",
        world["dir"] / "catastrophic.toml",
        "-o",
        tmp_path / "g.onnx",
    )
    assert res.exit_code == 0, res.output
    assert time.perf_counter() - t0 < 20


def test_planted_symlinks_at_the_old_temporary_names(tmp_path):
    """The writer used '.{name}.tmp{pid}'; a symlink planted there must not redirect the write."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    pid = os.getpid()
    for name in ("a.npy", "a.png", "a.txt", "a.onnx"):
        for tmp in (f".{name}.tmp{pid}", f".{name}.tmp{pid}.npy"):
            (tmp_path / tmp).symlink_to(victim)
    render.save_npy(np.ones(3), tmp_path / "a.npy")
    render.save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
    render.save_text("hello", tmp_path / "a.txt")
    save_model_atomic(tiny_cnn(), tmp_path / "a.onnx")
    assert victim.read_text() == "precious"
    assert np.load(tmp_path / "a.npy").tolist() == [1, 1, 1]
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert not any(p.name.startswith(".onnxplain-") for p in tmp_path.iterdir())


def test_output_that_is_a_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.npy"
    np.save(victim, np.zeros(2))
    before = victim.read_bytes()
    (tmp_path / "out.npy").symlink_to(victim)
    render.save_npy(np.ones(3), tmp_path / "out.npy")
    assert victim.read_bytes() == before and not (tmp_path / "out.npy").is_symlink()


def test_transaction_is_all_or_nothing(tmp_path):
    out = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError), Outputs().folder(out) as tx:
        render.save_text("one", out / "a.txt")
        render.save_text("two", out / "b.txt")
        assert not (out / "a.txt").exists()  # staged, not yet in place
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    with Outputs().folder(out) as tx:
        render.save_text("one", out / "a.txt")
    assert tx is not None and (out / "a.txt").read_text() == "one"


# ---- the Python API raises OnnxplainError ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ex(world):
    return Explainer(str(world["tiny"]))


X = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)

API_CASES = {
    "ragged list": lambda ex, w: ex.explain([[1.0, 2.0], [1.0]]),
    "strings": lambda ex, w: ex.explain(np.array([["a"]])),
    "empty batch": lambda ex, w: ex.explain(np.zeros((0, 3, 8, 8), np.float32)),
    "scalar input": lambda ex, w: ex.explain(np.float32(1.0)),
    "wrong shape": lambda ex, w: ex.explain(np.zeros((1, 3, 9, 8), np.float32)),
    "NaN input": lambda ex, w: ex.explain(np.full((1, 3, 8, 8), np.nan, np.float32)),
    "integer input": lambda ex, w: ex.explain(np.zeros((1, 3, 8, 8), np.int32)),
    "baseline of the wrong shape": lambda ex, w: ex.explain(
        X, "integrated_gradients", steps=2, baseline=np.zeros((5, 5), np.float32)
    ),
    "baseline NaN array": lambda ex, w: ex.explain(
        X, "integrated_gradients", steps=2, baseline=np.full((3, 8, 8), np.nan, np.float32)
    ),
    "baseline inf": lambda ex, w: ex.explain(X, "deeplift", baseline=np.inf),
    "target_weights of the wrong shape": lambda ex, w: ex.run(X, "gradient", target_weights=np.ones((2, 7))),
    "target_weights NaN": lambda ex, w: ex.run(X, "gradient", target_weights=np.full((2, 5), np.nan)),
    "target and target_weights": lambda ex, w: ex.run(X, "gradient", target=1, target_weights=np.ones((2, 5))),
    "float target": lambda ex, w: ex.explain(X, target=1.5),
    "target per item, wrong count": lambda ex, w: ex.explain(X, target=[1, 2, 3]),
    "target out of range": lambda ex, w: ex.explain(X, target=5),
    "run-time target out of range": lambda ex, w: Explainer(str(w["dir"] / "dyn.onnx")).explain(
        np.ones((1, 4), np.float32), target=4
    ),
    "class_axis 9": lambda ex, w: Explainer(str(w["tiny"]), class_axis=9),
    "class_axis 0": lambda ex, w: Explainer(str(w["tiny"]), class_axis=0),
    "class_axis 9, dynamic output": lambda ex, w: Explainer(str(w["dir"] / "dyn.onnx"), class_axis=9).explain(
        np.ones((1, 4), np.float32)
    ),
    "class_axis 2.5": lambda ex, w: Explainer(str(w["tiny"]), class_axis=2.5),
    "max_memory tiny": lambda ex, w: Explainer(str(w["tiny"]), max_memory=100).explain(X),
    "max_memory abc": lambda ex, w: Explainer(str(w["tiny"]), max_memory="abc"),
    "two inputs": lambda ex, w: Explainer(str(w["dir"] / "two.onnx")).explain(np.ones((1, 4), np.float32)),
    "unknown option": lambda ex, w: ex.explain(X, "gradient", steps=3),
    "steps 0": lambda ex, w: ex.explain(X, "integrated_gradients", steps=0),
    "noise nan": lambda ex, w: ex.explain(X, "smoothgrad", noise=float("nan")),
    "missing model": lambda ex, w: Explainer(str(w["dir"] / "nope.onnx")),
    "300-char model name": lambda ex, w: Explainer(str(w["dir"] / f"{TOO_LONG}.onnx")),
    "save_model_atomic to a folder": lambda ex, w: save_model_atomic(tiny_cnn(), w["dir"] / "ext"),
    "save_model_atomic under a file": lambda ex, w: save_model_atomic(tiny_cnn(), w["dir"] / "afile" / "m.onnx"),
    "save_npy under /proc": lambda ex, w: render.save_npy(np.ones(2), Path("/proc/onnxplain/x.npy")),
    "save_png with a NUL": lambda ex, w: render.save_png(np.zeros((2, 2, 3), np.uint8), w["dir"] / "a\0b.png"),
    "Outputs refuses the model's data": lambda ex, w: Outputs(models=[w["ext"]]).file(
        w["dir"] / "ext" / "weights.onnx"
    ),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_case(ex, world, name):
    with pytest.raises(OnnxplainError) as err:
        API_CASES[name](ex, world)
    assert "\n" not in str(err.value).strip()
    assert snapshot(world["dir"]) == world["snapshot"]


def test_regex_fallback_without_re2(monkeypatch, tmp_path):
    """Without google-re2, patterns that can backtrack exponentially are refused; plain ones still work."""
    from onnxplain.rules import ruleset

    monkeypatch.setattr(ruleset, "_re2", lambda: None)
    for bad in ("(a+)+$", "(a*)*b", "(x|xy)+z\\1", "(?=a)a", "(a{1,9})*"):
        with pytest.raises(OnnxplainError, match="backtracking"):
            ruleset._regex(bad, "f.toml: rule[0]")
    assert ruleset._regex("^/features/0/.*", "f.toml: rule[0]").fullmatch("/features/0/conv")
    with pytest.raises(OnnxplainError, match="bad regular expression"):
        ruleset._regex("(unclosed", "f.toml: rule[0]")


def test_node_names_matched_once(world):
    """Each node name is matched against an entry's patterns once, however often the walker asks."""
    from onnxplain.rules.ruleset import Env, load_ruleset

    calls = []

    class Counting:
        def fullmatch(self, name):
            calls.append(name)
            return None

    rs = load_ruleset(world["dir"] / "catastrophic.toml")
    rs.entries[0].names = [Counting()]

    class Node:
        op, name = "Relu", "a" * 40 + "!"

    for _ in range(5):
        rs.entries[0].matches(Node(), Env())
    assert calls == [Node.name]
