"""The CLI's target options: --box/--class, --target-weights, --region, --position, --task; inspect's task guess;
all-zero maps are errors; the shipped detector and segmenter demos."""

import numpy as np
import onnx
import pytest
from PIL import Image
from test_targets import X, block_mask, dense_model, nms_model, one_channel_model, seq_model, xyxy, yolo_head
from typer.testing import CliRunner

from onnxplain.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def user_error(res, needle):
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


@pytest.fixture
def det(tmp_path):
    p = tmp_path / "det.onnx"
    onnx.save(yolo_head(), str(p))
    np.save(tmp_path / "x.npy", X[0])
    return p, tmp_path / "x.npy"


def test_explain_box_and_class(det, tmp_path):
    model, x = det
    b = ",".join(str(v) for v in xyxy(6))
    res = run("explain", model, x, "--box", b, "--class", 1, "-d", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "class 1 score of candidate 6" in res.stdout
    a = np.load(tmp_path / "o" / "x.gradient.npy")[0]
    assert np.all(a[~block_mask(6)] == 0) and np.all(a[block_mask(6)] != 0)


def test_explain_target_weights_and_black_box(det, tmp_path):
    model, x = det
    w = np.zeros((1, 6, 16), np.float32)
    w[0, 5, 9] = 1
    np.save(tmp_path / "w.npy", w)
    res = run(
        "explain",
        model,
        x,
        "--target-weights",
        tmp_path / "w.npy",
        "-m",
        "gradient,occlusion",
        "--window",
        2,
        "-d",
        tmp_path / "o",
    )
    assert res.exit_code == 0, res.output
    for m in ("gradient", "occlusion"):
        a = np.load(tmp_path / "o" / f"x.{m}.npy")[0]
        assert np.all(a[~block_mask(9)] == 0) and np.any(a[block_mask(9)] != 0), m


def test_all_zero_map_is_an_error(det, tmp_path):
    model, x = det
    res = run("explain", model, x, "--box", ",".join(map(str, xyxy(2))), "--coordinate", 0, "-d", tmp_path / "o")
    user_error(res, "all-zero")  # the boxes are constants: nothing depends on the input


def test_task_detect_default_and_plain_target(det, tmp_path):
    model, x = det
    res = run("explain", model, x, "--task", "detect", "--target", 0, "-d", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "detection 0 of class 0" in res.stdout


def test_conflicting_target_options(det, tmp_path):
    model, x = det
    user_error(run("explain", model, x, "--box", "0,0,2,2", "--target", 1, "-d", tmp_path / "o"), "one target option")
    user_error(run("explain", model, x, "--box", "2,2,1,1", "-d", tmp_path / "o"), "--box")
    user_error(run("explain", model, x, "--task", "draw", "-d", tmp_path / "o"), "--task")


def test_nms_model_default_explains_the_top_selected_detection(tmp_path):
    m, _ = nms_model()
    onnx.save(m, str(tmp_path / "nms.onnx"))
    np.save(tmp_path / "x.npy", X[0])
    res = run("explain", tmp_path / "nms.onnx", tmp_path / "x.npy", "-d", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "NMS selection" in res.stdout and "selected_indices row" in res.stdout


def test_region_png_and_position(tmp_path):
    onnx.save(dense_model(), str(tmp_path / "seg.onnx"))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(2, 6, 6)).astype(np.float32))
    mask = np.zeros((6, 6), np.uint8)
    mask[:3, :3] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    res = run(
        "explain",
        tmp_path / "seg.onnx",
        tmp_path / "x.npy",
        "--region",
        tmp_path / "mask.png",
        "--class",
        2,
        "-d",
        tmp_path / "o",
    )
    assert res.exit_code == 0, res.output
    assert "sum of channel 2 over 25% of the map (9 pixels)" in res.stdout
    onnx.save(seq_model(), str(tmp_path / "seq.onnx"))
    np.save(tmp_path / "s.npy", np.random.default_rng(7).normal(size=(1, 3, 7)).astype(np.float32))
    res = run("explain", tmp_path / "seq.onnx", tmp_path / "s.npy", "--position", "3:2", "-d", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "token 2 at timestep 3" in res.stdout
    user_error(
        run("explain", tmp_path / "seq.onnx", tmp_path / "s.npy", "--position", "x", "-d", tmp_path / "o"), "--position"
    )


def test_one_channel_map_occlusion_is_written(tmp_path):
    onnx.save(one_channel_model(), str(tmp_path / "p.onnx"))
    np.save(tmp_path / "x.npy", X[0])
    res = run(
        "explain", tmp_path / "p.onnx", tmp_path / "x.npy", "-m", "occlusion", "--window", 2, "-d", tmp_path / "o"
    )
    assert res.exit_code == 0, res.output
    assert np.any(np.load(tmp_path / "o" / "x.occlusion.npy") != 0)


def test_inspect_says_the_task(det):
    res = run("inspect", det[0])
    assert res.exit_code == 0, res.output
    assert "task " in res.stdout


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_demo_task(task, tmp_path):
    res = run("demo", "--task", task, "--n", 1, "-d", tmp_path)
    assert res.exit_code == 0, res.output
    assert "pointing game" in res.stdout and (tmp_path / f"demo_{task}.png").is_file()
