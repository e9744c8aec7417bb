"""The command line: one-line errors with exit code 2, and each command end to end."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from PIL import Image
from typer.testing import CliRunner

from onnxplain.cli import app, merge_numeric_args

ROOT = Path(__file__).resolve().parents[1]


# ---- tiny models -------------------------------------------------------------------------------------
def _save(graph, path, opset=17):
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def tiny_cnn(path, input_shape=("N", 3, 8, 8)):
    """image [N,3,8,8] -> Conv -> Relu -> Flatten -> Gemm (logits) -> Softmax (probs), 3 classes."""
    r = np.random.default_rng(0)
    inits = [
        nh.from_array(r.normal(size=(4, 3, 3, 3)).astype(np.float32), "W"),
        nh.from_array(np.zeros(4, np.float32), "B"),
        nh.from_array((r.normal(size=(4 * 8 * 8, 3)) * 0.1).astype(np.float32), "G"),
    ]
    nodes = [
        h.make_node("Conv", ["image", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Flatten", ["r"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "G"], ["logits"], name="fc"),
        h.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    g = h.make_graph(
        nodes,
        "tiny",
        [h.make_tensor_value_info("image", T.FLOAT, list(input_shape))],
        [h.make_tensor_value_info("probs", T.FLOAT, ["N", 3])],
        inits,
    )
    return _save(g, path)


def det_model(path):
    """Two Det nodes (no gradient rule) on the explained path, plus covered ones."""
    nodes = [
        h.make_node("Det", ["x"], ["da"], name="det_a"),
        h.make_node("Mul", ["x", "two"], ["x2"], name="mul"),
        h.make_node("Det", ["x2"], ["db"], name="det_b"),
        h.make_node("Add", ["da", "db"], ["y"], name="add"),
    ]
    g = h.make_graph(
        nodes,
        "det",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 2, 4, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])],
        [h.make_tensor("two", T.FLOAT, [], [2.0])],
    )
    return _save(g, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    r = np.random.default_rng(1)
    f = {
        "tiny": tiny_cnn(d / "tiny.onnx"),
        "dyn": tiny_cnn(d / "dyn.onnx", ("N", 3, "H", "W")),  # Gemm still needs 8x8: onnxruntime fails otherwise
        "det": det_model(d / "det.onnx"),
        "junk": d / "junk.onnx",
        "png": d / "photo.png",
        "npy": d / "item.npy",
        "batch": d / "batch.npy",
        "wrong": d / "wrong.npy",
        "nan": d / "nan.npy",
        "big": d / "big.npy",
    }
    f["junk"].write_bytes(r.integers(0, 256, 500, dtype=np.uint8).tobytes())
    Image.fromarray((r.random((20, 30, 3)) * 255).astype(np.uint8)).save(f["png"])
    np.save(f["npy"], r.random((3, 8, 8)).astype(np.float32))
    np.save(f["batch"], r.random((2, 3, 8, 8)).astype(np.float32))
    np.save(f["wrong"], r.random((3, 9, 9)).astype(np.float32))
    nan = r.random((3, 8, 8)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    np.save(f["nan"], nan)
    np.save(f["big"], r.random((3, 9, 9)).astype(np.float32))
    return f


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def cli(files):
    """Invoke the app; afterwards every input file must be byte-for-byte unchanged."""
    before = {k: digest(p) for k, p in files.items()}
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    yield invoke
    assert {k: digest(p) for k, p in files.items()} == before


def assert_user_error(res, *needles):
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ---- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["inspect", "export", "explain"])
def test_missing_model(cli, tmp_path, command):
    extra = {"export": ["-o", tmp_path / "o.onnx"], "explain": [tmp_path / "x.npy"], "inspect": []}[command]
    res = cli(command, tmp_path / "nope.onnx", *extra)
    assert_user_error(res, "no such file")


@pytest.mark.parametrize("command", ["inspect", "export", "explain"])
def test_not_onnx(cli, files, tmp_path, command):
    extra = {"export": ["-o", tmp_path / "o.onnx"], "explain": [files["npy"]], "inspect": []}[command]
    res = cli(command, files["junk"], *extra)
    assert_user_error(res, "not a valid ONNX model")
    assert not (tmp_path / "o.onnx").exists()


def test_unsupported_ops_listed_and_nothing_written(cli, files, tmp_path):
    out = tmp_path / "sub" / "det.explained.onnx"
    line = assert_user_error(cli("export", files["det"], "-o", out), "2 node(s)")
    assert "det_a" in line and "det_b" in line
    assert not out.exists() and not out.parent.exists()
    assert list(tmp_path.iterdir()) == []
    # explain (on a .npy item of the right shape) reports the same error, before writing anything
    np.save(tmp_path / "x.npy", np.eye(4, dtype=np.float32)[None].repeat(2, 0))
    res = cli("explain", files["det"], tmp_path / "x.npy", "-d", tmp_path / "o")
    assert_user_error(res, "det_a", "det_b")
    assert not (tmp_path / "o").exists()


def test_target_out_of_range(cli, files, tmp_path):
    res = cli("explain", files["tiny"], files["png"], "--target", 7, "-d", tmp_path / "o")
    assert_user_error(res, "out of range", "3 classes")
    assert not (tmp_path / "o").exists()


def test_wrong_input_shape_npy(cli, files, tmp_path):
    res = cli("explain", files["tiny"], files["wrong"], "-d", tmp_path / "o")
    assert_user_error(res, "expects shape", "[1, 3, 9, 9]")
    assert not (tmp_path / "o").exists()


def test_wrong_rank_npy(cli, files, tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(7, np.float32))
    assert_user_error(cli("explain", files["tiny"], tmp_path / "flat.npy", "-d", tmp_path / "o"), "does not fit")


def test_nan_input(cli, files, tmp_path):
    res = cli("explain", files["tiny"], files["nan"], "-d", tmp_path / "o")
    assert_user_error(res, "NaN")
    assert not (tmp_path / "o").exists()


def test_onnxruntime_failure_is_one_line(cli, files, tmp_path):
    # symbolic H, W pass the shape check, but the Gemm needs 8x8: onnxruntime refuses 9x9
    res = cli("explain", files["dyn"], files["big"], "-d", tmp_path / "o")
    assert_user_error(res, "onnxruntime", "Gemm")


def test_out_equal_to_model_refused(cli, files, tmp_path):
    model = files["tiny"]
    assert_user_error(cli("export", model, "-o", model), "refusing to overwrite")
    alias = model.parent / "." / ".." / model.parent.name / model.name
    assert_user_error(cli("export", model, "-o", alias), "refusing to overwrite")
    link = tmp_path / "link.onnx"
    os.symlink(model, link)
    assert_user_error(cli("export", model, "-o", link), "refusing to overwrite")


def test_explain_never_overwrites_inputs(cli, files, tmp_path):
    src = tmp_path / "a.gradient.npy"
    np.save(src, np.random.rand(3, 8, 8).astype(np.float32))
    np.save(tmp_path / "a.npy", np.random.rand(3, 8, 8).astype(np.float32))
    before = digest(src)
    res = cli("explain", files["tiny"], tmp_path / "a.npy", src, "-d", tmp_path)
    assert_user_error(res, "refusing to overwrite")
    assert digest(src) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["frobnicate"], "No such command"),
        (["export", "MODEL"], "Missing option"),
        (["explain"], "Missing argument"),
        (["inspect", "m.onnx", "--bogus"], "No such option"),
        (["export", "m.onnx", "-o", "x.onnx", "--steps", "0"], "--steps"),
        (["export", "m.onnx", "-o", "x.onnx", "--steps", "many"], "--steps"),
    ],
)
def test_usage_errors(cli, args, needle):
    assert_user_error(cli(*args), needle)


def test_bad_options(cli, files, tmp_path):
    d = ["-d", tmp_path / "o"]
    assert_user_error(cli("export", files["tiny"], "-o", tmp_path / "x.onnx", "-m", "nope"), "unknown method")
    assert_user_error(cli("explain", files["tiny"], files["png"], "-m", "nope", *d), "unknown method")
    assert_user_error(cli("explain", files["tiny"], files["png"], "--layout", "NCWH", *d), "--layout")
    assert_user_error(cli("explain", files["tiny"], files["png"], "--mean", "1", "2", *d), "--mean has 2 values")
    assert_user_error(cli("explain", files["tiny"], files["png"], "--preset", "vgg", *d), "unknown preset")
    assert_user_error(cli("explain", files["tiny"], files["png"], "--scale", "1/0", *d), "--scale")
    assert_user_error(cli("explain", files["tiny"], files["junk"], *d), "cannot read image")
    assert_user_error(cli("explain", files["tiny"], files["png"], "--size", "5", "6", *d), "expects shape")
    assert_user_error(cli("export", files["tiny"], "-o", tmp_path / "x.onnx", "--target-mode", "soft"), "target")
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.onnx").exists()


def test_subprocess_error_has_no_traceback(files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (
        ["inspect", str(files["junk"])],
        ["export", str(files["det"]), "-o", str(tmp_path / "x.onnx")],
        ["explain", str(files["dyn"]), str(files["big"]), "-d", str(tmp_path / "o")],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "onnxplain.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
        assert "Traceback" not in p.stderr + p.stdout
    assert sorted(os.listdir(tmp_path)) == []


def test_merge_numeric_args(tmp_path):
    assert merge_numeric_args(["--size", "160", "224", "a.png"]) == ["--size", "160 224", "a.png"]
    assert merge_numeric_args(["--size", "224", "a.png"]) == ["--size", "224", "a.png"]
    assert merge_numeric_args(["--mean", "0.5", "0.4", "0.3", "x"]) == ["--mean", "0.5 0.4 0.3", "x"]
    assert merge_numeric_args(["--size", "224x160"]) == ["--size", "224x160"]
    (tmp_path / "7").write_text("")
    here = os.getcwd()
    os.chdir(tmp_path)
    try:  # an existing file named like a number is never swallowed
        assert merge_numeric_args(["--size", "6", "7"]) == ["--size", "6", "7"]
    finally:
        os.chdir(here)


# ---- commands -----------------------------------------------------------------------------------------
def test_version(cli):
    from onnxplain import __version__

    res = cli("version")
    assert res.exit_code == 0 and __version__ in res.stdout
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"onnxplain {__version__}"


@pytest.mark.parametrize(
    "method, extra",
    [
        ("gradient", []),
        ("saliency", []),
        ("integrated_gradients", ["--steps", "8"]),
        ("smoothgrad", ["--samples", "4"]),
    ],
)
def test_export_checks_and_runs(cli, files, tmp_path, method, extra):
    out = tmp_path / "deep" / f"tiny.{method}.onnx"
    res = cli("export", files["tiny"], "-m", method, "-o", out, *extra)
    assert res.exit_code == 0, res.output
    assert "nodes    5 ->" in res.stdout and "full_check passed" in res.stdout and "attribution" in res.stdout
    onnx.checker.check_model(str(out), full_check=True)
    m = onnx.load(str(out))
    names = [o.name for o in m.graph.output]
    assert names == ["probs", "attribution", "target_index"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    probs, attr, idx = sess.run(None, {"image": x, "target": np.array([2, -1], np.int64)})
    assert attr.shape == ((2, 1, 8, 8) if method == "saliency" else (2, 3, 8, 8))
    assert np.all(np.isfinite(attr))
    assert idx[0] == 2 and idx[1] == probs[1].argmax()
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary files left


def test_export_weights_mode(cli, files, tmp_path):
    out = tmp_path / "w.onnx"
    res = cli("export", files["tiny"], "-o", out, "--target-mode", "weights")
    assert res.exit_code == 0, res.output
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert "target_weights" in [i.name for i in sess.get_inputs()]


def test_explain_writes_png_and_npy(cli, files, tmp_path):
    out = tmp_path / "res"
    res = cli(
        "explain",
        files["tiny"],
        files["png"],
        files["npy"],
        files["batch"],
        "-m",
        "gradient",
        "-m",
        "saliency",
        "-m",
        "integrated_gradients",
        "--steps",
        "4",
        "-d",
        out,
    )
    assert res.exit_code == 0, res.output
    stems = ["photo", "item", "batch_0", "batch_1"]
    for stem in stems:
        for m in ("gradient", "saliency", "integrated_gradients"):
            a = np.load(out / f"{stem}.{m}.npy")
            assert a.shape == ((1, 8, 8) if m == "saliency" else (3, 8, 8))
            with Image.open(out / f"{stem}.{m}.png") as im:  # the overlay enlarged, caption above, colour bar below
                assert im.width >= 256 and im.height > 256 and im.mode == "RGB"
    with Image.open(out / "comparison.png") as im:
        assert im.width > 4 * 8 and im.height > 4 * 8
    lines = [ln for ln in res.stdout.splitlines() if "predicted" in ln]
    assert len(lines) == 4 and all("target" in ln and "score probs[" in ln for ln in lines)
    assert res.stderr == ""


def test_explain_target_and_preset(cli, files, tmp_path):
    res = cli(
        "explain", files["tiny"], files["png"], "--target", 2, "--preset", "imagenet", "--size", 8, 8, "-d", tmp_path
    )
    assert res.exit_code == 0, res.output
    assert "target 2" in res.stdout
    assert (tmp_path / "photo.gradient.png").exists() and not (tmp_path / "comparison.png").exists()


def test_inspect_text(cli, files):
    res = cli("inspect", files["tiny"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for needle in (
        "image",
        "[N, 3, 8, 8]",
        "probs",
        "opset ai.onnx 17",
        "Conv",
        "Gemm",
        "Softmax stripped",
        "unsupported on the explained path: none",
        "CAM candidate",
    ):
        assert needle in out, needle
    conv = next(ln for ln in out.splitlines() if ln.strip().startswith("Conv "))
    assert "✓" in conv
    res = cli("inspect", files["det"])
    assert res.exit_code == 0
    det = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("Det "))
    assert "✗" in det and "unsupported" in det
    assert "det_a" in res.stdout and "det_b" in res.stdout


def test_inspect_json(cli, files):
    res = cli("inspect", files["tiny"], "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["inputs"] == [{"name": "image", "dtype": "float", "shape": ["N", 3, 8, 8]}]
    assert info["explained"]["logits"] == "logits" and info["explained"]["stripped"] == ["Softmax"]
    ops = {r["op"]: r for r in info["op_types"]}
    assert ops["Conv"]["rule"] and ops["Conv"]["count"] == 1 and ops["Conv"]["on_path"] == 1
    assert info["unsupported_on_path"] == []
    cam = info["cam_candidates"]
    assert cam and cam[-1]["default"] and cam[-1]["tensor"] == "r" and cam[-1]["shape"] == ["N", 4, 8, 8]
    assert sum(c["default"] for c in cam) == 1
    det = json.loads(cli("inspect", files["det"], "--json").stdout)
    assert {(u["op"], u["name"]) for u in det["unsupported_on_path"]} == {("Det", "det_a"), ("Det", "det_b")}


def test_demo_end_to_end(cli, tmp_path):
    from onnxplain.io.resources import demo_model

    assert demo_model().is_file()
    res = cli("demo", "--out-dir", tmp_path, "--n", 2, "--steps", 4, "--samples", 4)
    assert res.exit_code == 0, res.output
    for m in ("gradient", "saliency", "input_x_gradient", "smoothgrad", "integrated_gradients"):
        assert m in res.stdout
        a = np.load(tmp_path / f"demo_{m}.npy")
        assert a.shape[0] == 2 and np.all(np.isfinite(a))
    assert "mask mass" in res.stdout
    with Image.open(tmp_path / "demo_methods.png") as im:
        assert im.width > 6 * 64 and im.height > 2 * 64


def test_run_demo_logic_with_a_stand_in_model(tmp_path):
    """The demo pipeline on a small random CNN of the demo's interface ([N,3,64,64] -> 5 logits)."""
    from onnxplain.io.demo import METHODS, format_table, mask_mass, run_demo

    r = np.random.default_rng(0)
    inits = [
        nh.from_array((r.normal(size=(4, 3, 5, 5)) * 0.2).astype(np.float32), "W"),
        nh.from_array(np.zeros(4, np.float32), "B"),
        nh.from_array((r.normal(size=(4 * 16 * 16, 5)) * 0.02).astype(np.float32), "G"),
    ]
    nodes = [
        h.make_node("Conv", ["image", "W", "B"], ["c"], pads=[2, 2, 2, 2], strides=[4, 4], name="conv"),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Flatten", ["r"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "G"], ["logits"], name="fc"),
    ]
    g = h.make_graph(
        nodes,
        "standin",
        [h.make_tensor_value_info("image", T.FLOAT, ["N", 3, 64, 64])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["N", 5])],
        inits,
    )
    model = _save(g, tmp_path / "standin.onnx")
    res = run_demo(tmp_path / "out", n=2, steps=4, samples=4, model=model)
    assert set(res.seconds_per_image) == set(METHODS) and res.predicted.shape == (2,)
    assert all(0 <= v <= 1 for v in res.mask_mass.values())
    assert (tmp_path / "out" / "demo_methods.png").exists()
    assert np.load(tmp_path / "out" / "demo_integrated_gradients.npy").shape == (2, 3, 64, 64)
    assert "mask mass" in format_table(res)
    m = np.zeros((4, 4), bool)
    m[:2] = True
    assert mask_mass(np.array([[1.0] * 4, [1.0] * 4, [-5.0] * 4, [0.0] * 4]), m) == 1.0


def test_resources_find_the_checkout_folders():
    from onnxplain.io import resources

    assert resources.rules_dir() == ROOT / "rules"
    assert resources.models_dir() == ROOT / "models"
    assert resources.find("no", "such", "thing") is None


def test_path_based_check_for_big_graphs(files, tmp_path):
    """The >2 GB branch (forced with a zero limit): checked on disk, moved in, no temporaries left."""
    from onnxplain.cli import _check_and_save
    from onnxplain.graph.rewrite import build

    graph = build(str(files["tiny"]), "gradient")
    out = tmp_path / "new" / "g.onnx"
    _check_and_save(graph, out, onnx, in_memory_limit=0)
    onnx.checker.check_model(str(out), full_check=True)
    assert [p.name for p in out.parent.iterdir()] == ["g.onnx"]
    bad = onnx.ModelProto()
    bad.CopyFrom(graph)
    bad.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(Exception, match="nothing was written"):
        _check_and_save(bad, tmp_path / "other" / "b.onnx", onnx, in_memory_limit=0)
    assert not (tmp_path / "other").exists()
    with pytest.raises(Exception, match="nothing was written"):
        _check_and_save(bad, tmp_path / "b.onnx", onnx)
    assert not (tmp_path / "b.onnx").exists()


def test_explain_nhwc_model_matches_nchw(cli, files, tmp_path):
    """The same network behind a Transpose: layout is inferred, attributions agree (transposed)."""
    m = onnx.load(str(files["tiny"]))
    m.graph.node[0].input[0] = "image_nchw"
    m.graph.node.insert(0, h.make_node("Transpose", ["image"], ["image_nchw"], perm=[0, 3, 1, 2], name="to_nchw"))
    m.graph.input[0].CopyFrom(h.make_tensor_value_info("image", T.FLOAT, ["N", 8, 8, 3]))
    onnx.save(m, str(tmp_path / "nhwc.onnx"))
    a = cli("explain", tmp_path / "nhwc.onnx", files["png"], "-m", "gradient", "-m", "saliency", "-d", tmp_path / "a")
    b = cli("explain", files["tiny"], files["png"], "-m", "gradient", "-m", "saliency", "-d", tmp_path / "b")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.stdout.splitlines()[0] == b.stdout.splitlines()[0]  # same prediction and score
    for m_, shape in (("gradient", (8, 8, 3)), ("saliency", (8, 8, 1))):
        x, y = np.load(tmp_path / "a" / f"photo.{m_}.npy"), np.load(tmp_path / "b" / f"photo.{m_}.npy")
        assert x.shape == shape
        np.testing.assert_allclose(x, y.transpose(1, 2, 0), rtol=1e-5, atol=1e-6)
