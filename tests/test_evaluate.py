"""`onnxplain evaluate` and its orchestrator: known answers on a model whose evidence is known,
the known sanity-check finding on the demo model, files, tables and one-line errors."""

import csv
import io
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from scipy.stats import spearmanr
from typer.testing import CliRunner

from onnxplain.cli import app
from onnxplain.errors import OnnxplainError
from onnxplain.evaluation import runner as E
from onnxplain.evaluation.metrics import sanity

# ---- a model that reads one region per class ---------------------------------------------------
SIDE = 8
REGION = np.zeros((SIDE, SIDE), bool)
REGION[1:4, 2:6] = True  # class 0 reads only these 12 pixels
OTHER = np.zeros((SIDE, SIDE), bool)
OTHER[5:8, 0:3] = True  # class 1 only these 9


def region_model(path=None, batch="N") -> onnx.ModelProto:
    """x [N,1,8,8] -> Flatten -> MatMul W [64,2]: logit_c = sum of x over class c's region."""
    w = np.stack([REGION.ravel(), OTHER.ravel()], axis=1).astype(np.float32)
    nodes = [
        h.make_node("Flatten", ["x"], ["f"], name="flat"),
        h.make_node("MatMul", ["f", "W"], ["logits"], name="fc"),
    ]
    g = h.make_graph(
        nodes,
        "regions",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 1, SIDE, SIDE])],
        [h.make_tensor_value_info("logits", T.FLOAT, [batch, 2])],
        [nh.from_array(w, "W")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    if path is not None:
        onnx.save(m, str(path))
    return m


def region_data(n=5, seed=0):
    x = np.random.default_rng(seed).uniform(0.1, 1.0, size=(n, 1, SIDE, SIDE)).astype(np.float32)
    return x, np.zeros(n, np.int64), np.repeat(REGION[None], n, axis=0)


@pytest.fixture(scope="module")
def region_eval():
    x, y, masks = region_data()
    return E.evaluate(
        region_model(),
        x,
        y,
        masks,
        methods=["gradient", "input_x_gradient"],
        metrics=["all"],
        shuffled_model=region_model(),
        settings=E.Settings(n_sanity=3, steps=8, region=2, fill=0.0),
    )


def test_gradient_of_a_region_reader_localises_perfectly(region_eval):
    # the gradient of logit 0 is the region's indicator: every localisation metric is exactly 1
    for key in ("pointing_game", "relevance_mass", "relevance_rank"):
        assert region_eval.values[key]["gradient"] == pytest.approx(np.ones(5))


def test_gradient_of_a_linear_model_is_insensitive_to_noise(region_eval):
    assert region_eval.values["max_sensitivity"]["gradient"] == pytest.approx(np.zeros(3), abs=1e-12)
    assert np.all(region_eval.values["max_sensitivity"]["input_x_gradient"] > 0)  # x * grad moves with x


def test_class_sensitivity_is_the_rank_correlation_of_the_two_regions(region_eval):
    want = spearmanr(REGION.ravel().astype(float), OTHER.ravel().astype(float))[0]
    assert region_eval.values["class_sensitivity"]["gradient"] == pytest.approx(np.full(5, want))


def test_perfect_order_deletes_the_logit_first(region_eval):
    # x * grad ranks the region's pixels by their contribution: region perturbation (fill 0) MoRF
    # removes the logit first, LeRF leaves it untouched until the region's tiles come, last
    assert np.all(
        region_eval.values["region_morf"]["input_x_gradient"] > region_eval.values["region_lerf"]["input_x_gradient"]
    )
    c = region_eval.curves["deletion"]["input_x_gradient"]
    assert c.scores.shape == (5, 9) and c.fraction[0] == 0 and c.fraction[-1] == 1


def test_randomisation_scores_match_an_independent_computation(region_eval):
    # one layer: cascading and independent both randomise W; the gradient map is then |W'[:, 0]|
    ((name, randomised),) = list(sanity.cascading(region_model()))
    w = nh.to_array(next(t for t in randomised.graph.initializer if t.name == "W"))
    want = spearmanr(np.abs(w[:, 0]), REGION.ravel().astype(float))[0]
    for key in ("cascading", "cascading_last", "independent"):
        assert region_eval.values[key]["gradient"] == pytest.approx(np.full(3, want))
    # the same model as its own "shuffled-label" twin: identical maps
    assert region_eval.values["data_randomisation"]["gradient"] == pytest.approx(np.ones(3))
    assert region_eval.layers == [name]


def test_an_nhwc_model_gives_the_same_answers(region_eval):
    """The same region reader taking [N, 8, 8, 3] images (channels last, summed by the model)."""
    w = np.repeat(np.stack([REGION.ravel(), OTHER.ravel()], axis=1), 3, axis=0).astype(np.float32)
    nodes = [
        h.make_node("Flatten", ["x"], ["f"], name="flat"),
        h.make_node("MatMul", ["f", "W"], ["logits"], name="fc"),
    ]
    g = h.make_graph(
        nodes,
        "regions_nhwc",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", SIDE, SIDE, 3])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["N", 2])],
        [nh.from_array(w, "W")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    x, y, masks = region_data()
    nhwc = np.repeat(x.transpose(0, 2, 3, 1), 3, axis=3)
    ev = E.evaluate(
        m,
        nhwc,
        y,
        masks,
        methods=["gradient", "saliency"],
        metrics=["relevance_mass", "class_sensitivity", "max_sensitivity"],
    )
    assert ev.values["relevance_mass"]["gradient"] == pytest.approx(np.ones(5))
    assert ev.values["relevance_mass"]["saliency"] == pytest.approx(np.ones(5))
    assert ev.values["class_sensitivity"]["gradient"] == pytest.approx(
        region_eval.values["class_sensitivity"]["gradient"]
    )
    with pytest.raises(OnnxplainError, match="layout must be"):
        E.evaluate(m, nhwc, y, masks, methods=["gradient"], metrics=["relevance_mass"], layout="CHW")


def test_a_fixed_batch_1_model_gives_the_same_answers(region_eval):
    x, y, masks = region_data()
    ev = E.evaluate(
        region_model(batch=1),
        x,
        y,
        masks,
        methods=["gradient"],
        metrics=["relevance_rank", "class_sensitivity", "max_sensitivity", "region_perturbation"],
        settings=E.Settings(n_sanity=3, steps=8, region=2, fill=0.0),
    )
    for key in ("relevance_rank", "class_sensitivity", "max_sensitivity", "region_morf"):
        assert ev.values[key]["gradient"] == pytest.approx(region_eval.values[key]["gradient"])


def test_tables_and_files(region_eval, tmp_path):
    files = E.write(region_eval, tmp_path)
    names = {f.name for f in files}
    assert {
        "evaluation.csv",
        "evaluation.json",
        "evaluation.md",
        "curve_deletion.png",
        "curve_insertion.png",
        "sanity_cascading.png",
        "sanity_independent.png",
        "sanity_cascade_maps.png",
    } <= names
    rows = list(csv.DictReader(io.StringIO((tmp_path / "evaluation.csv").read_text())))
    assert len(rows) == 2 * len(region_eval.columns())
    mass = next(r for r in rows if r["method"] == "gradient" and r["metric"] == "relevance_mass")
    assert float(mass["mean"]) == 1.0 and mass["better"] == "higher" and mass["n"] == "5"
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert doc["per_image"]["pointing_game"]["gradient"] == [1.0] * 5
    assert set(doc["curves"]) == {"pixel_flipping", "region_morf", "region_lerf", "deletion", "insertion"}
    table = region_eval.table().splitlines()
    assert len(table) == 3 and table[1].startswith("gradient")


def test_heatmaps_sum_channels_and_resize():
    a = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    assert np.array_equal(E.heatmaps(a, (4, 4)), a.sum(axis=1))
    coarse = np.ones((2, 1, 2, 2))
    assert E.heatmaps(coarse, (4, 4)).shape == (2, 4, 4)


@pytest.mark.parametrize(
    "images, labels, masks, message",
    [
        (np.zeros((2, 8, 8), np.float32), None, None, "images must be a float array"),
        (np.zeros((2, 1, 8, 8), np.int64), None, None, "images must be a float array"),
        (np.zeros((2, 1, 8, 8), np.float32), np.zeros(3, np.int64), None, "labels must be 2 integers"),
        (np.zeros((2, 1, 8, 8), np.float32), None, np.zeros((2, 4, 4), bool), "masks must have shape"),
        (np.zeros((2, 1, 8, 8), np.float32), None, np.full((2, 8, 8), 0.5), "masks must be boolean"),
    ],
)
def test_bad_data(images, labels, masks, message):
    with pytest.raises(OnnxplainError, match=message):
        E.check_data(images, labels, masks)


def test_localisation_without_masks_and_unknown_names():
    x, y, _ = region_data(2)
    with pytest.raises(OnnxplainError, match="need ground-truth masks"):
        E.evaluate(region_model(), x, y, None, methods=["gradient"], metrics=["pointing_game"])
    with pytest.raises(OnnxplainError, match="unknown metric 'aopc'"):
        E.evaluate(region_model(), x, y, None, methods=["gradient"], metrics=["aopc"])
    with pytest.raises(OnnxplainError, match="needs a model trained on shuffled labels"):
        E.evaluate(region_model(), x, y, None, methods=["gradient"], metrics=["data_randomisation"])


# ---- the known finding, on the demo model ------------------------------------------------------------
def test_guided_backprop_survives_cascading_randomisation_better_than_the_gradient():
    """Adebayo et al. 2018, Fig. 2: guided backprop's maps stay close to the trained model's as the
    layers are randomised from the top, the gradient's do not."""
    from onnxplain.io.resources import demo_model
    from onnxplain.io.shapes_data import make_shapes

    x, y, _ = make_shapes(3, seed=11)
    ev = E.evaluate(
        str(demo_model()),
        x,
        y,
        methods=["gradient", "guided_backprop"],
        metrics=["cascading"],
        settings=E.Settings(n_sanity=3),
    )
    top = [rows[0]["spearman_abs"].mean() for rows in (ev.sanity["cascading"][m] for m in ev.methods)]
    assert top[1] > top[0] + 0.2, top  # after the top layer alone
    assert ev.mean("cascading", "guided_backprop") > ev.mean("cascading", "gradient") + 0.1


# ---- the command ---------------------------------------------------------------------------------------
@pytest.fixture()
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def test_cli_on_an_npz(run, tmp_path):
    x, y, masks = region_data(4)
    np.savez(tmp_path / "data.npz", images=x, labels=y, masks=masks)
    region_model(tmp_path / "m.onnx")
    r = run(
        "evaluate",
        tmp_path / "m.onnx",
        tmp_path / "data.npz",
        "-m",
        "gradient,saliency",
        "--metrics",
        "relevance_mass,deletion",
        "--steps",
        "4",
        "-d",
        tmp_path / "out",
    )
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(line.startswith("gradient") for line in lines) and any(line.startswith("saliency") for line in lines)
    assert "time per image relative to gradient: saliency" in r.output
    rows = list(csv.DictReader((tmp_path / "out" / "evaluation.csv").open()))
    assert {(r["method"], r["metric"]) for r in rows} == {
        (m, k) for m in ("gradient", "saliency") for k in ("seconds", "deletion", "relevance_mass")
    }


def test_cli_on_generated_shapes(run, tmp_path):
    r = run(
        "evaluate",
        "demo",
        "shapes",
        "--n",
        "2",
        "--n-sanity",
        "1",
        "-m",
        "gradcam",
        "--metrics",
        "pointing_game,independent",
        "-d",
        tmp_path / "out",
        "--json",
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert {row["metric"] for row in summary} == {"seconds", "pointing_game", "independent"}
    assert (tmp_path / "out" / "sanity_independent.png").is_file()


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda p: p.write_bytes(b"not a zip"), [], "cannot read"),
        (lambda p: np.savez(p, pictures=np.zeros((1, 1, 8, 8), np.float32)), [], "has no 'images' array"),
        (
            lambda p: np.savez(p, images=np.zeros((1, 1, 8, 8), np.float32)),
            ["--metrics", "pointing_game"],
            "need ground-truth masks",
        ),
        (lambda p: np.savez(p, images=np.zeros((1, 1, 8, 8), np.float32)), ["--metrics", "nope"], "unknown metric"),
        (lambda p: np.savez(p, images=np.zeros((1, 1, 8, 8), np.float32)), ["-m", "nope"], "unknown method"),
        (lambda p: np.savez(p, images=np.zeros((1, 1, 8, 8), np.float32)), ["--fill", "zero"], "--fill must be"),
        (lambda p: np.savez(p, images=np.zeros((1, 1, 4, 4), np.float32)), [], "expects shape"),
    ],
)
def test_cli_errors_are_one_line(run, tmp_path, make, args, message):
    make(tmp_path / "d.npz")
    region_model(tmp_path / "m.onnx")
    r = run("evaluate", tmp_path / "m.onnx", tmp_path / "d.npz", "-d", tmp_path / "out", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_data_randomisation_with_the_shipped_shuffled_label_model():
    """Adebayo et al. 2018, data randomisation: the gradient of a model trained on shuffled labels
    is not the gradient of the trained model."""
    from onnxplain.io.resources import demo_model, shuffled_model
    from onnxplain.io.shapes_data import make_shapes

    x, y, _ = make_shapes(2, seed=5)
    ev = E.evaluate(
        str(demo_model()),
        x,
        y,
        methods=["gradient"],
        metrics=["data_randomisation"],
        shuffled_model=str(shuffled_model()),
        settings=E.Settings(n_sanity=2),
    )
    assert ev.mean("data_randomisation", "gradient") < 0.5
