"""The method table: one entry per method, read by the API, the CLI, validation and the README."""

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models import tiny_cnn
from onnxplain import Explainer, OnnxplainError
from onnxplain.cli import app
from onnxplain.methods.attention import ATTENTION_ONLY
from onnxplain.methods.catalog import METHODS
from onnxplain.methods.table import COMMON, KINDS, MAPS, markdown

README = Path(__file__).resolve().parent.parent / "README.md"
runner = CliRunner()
# small settings so that every method runs in a fraction of a second on the tiny model
SMALL = {
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "smoothgrad_sq": {"samples": 3},
    "rise": {"n_masks": 40},
    "lime": {"samples": 40, "n_segments": 8},
    "kernelshap": {"samples": 40, "n_segments": 8},
    "occlusion": {"window": 4},
    # an 8x8 image has a 1x1 mask: at the default l1=1 deleting it all is exactly break-even
    "meaningful_perturbation": {"iterations": 3, "l1": 0.5},
    "extremal_perturbation": {"iterations": 3},
}


def _x(n=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 3, 8, 8)).astype(np.float32)


def test_entries_are_complete_and_consistent():
    names = METHODS.names()
    assert len(names) == len(set(names)) == 34
    for m in METHODS:
        assert m.kind in KINDS and m.map in MAPS and m.summary and m.paper and callable(m.run)
        assert (m.head is not None) == (m.kind in ("graph", "looped")), m.name
        defaults = m.settings({})  # every default passes its own validation
        assert set(defaults) == {o.name for o in m.options + COMMON}
    # an option shared by several methods has one type everywhere (one CLI flag serves them all)
    for name, takers in METHODS.option_names().items():
        types = {o.type for t in takers for o in METHODS.get(t).options if o.name == name}
        assert len(types) == 1, (name, types)


def test_readme_method_table_is_generated_from_the_table():
    text = README.read_text()
    block = re.search(r"<!-- methods:begin -->\n(.*?)\n<!-- methods:end -->", text, re.S)
    assert block is not None, "README lacks the generated method table"
    assert block.group(1) == markdown(METHODS), (
        "README's method table is stale: regenerate it with "
        "python -c 'from onnxplain.methods.catalog import METHODS; from onnxplain.methods.table import markdown; "
        "print(markdown(METHODS))'"
    )


@pytest.mark.parametrize(
    "spelling,name",
    [
        ("Grad-CAM", "gradcam"),
        ("GradCAM", "gradcam"),
        ("grad_cam", "gradcam"),
        ("integrated-gradients", "integrated_gradients"),
        ("IG", "integrated_gradients"),
        ("Kernel SHAP", "kernelshap"),
        ("shap", "kernelshap"),
        ("Guided-Backprop", "guided_backprop"),
        ("gxi", "input_x_gradient"),
    ],
)
def test_aliases_and_spellings(spelling, name):
    assert METHODS.get(spelling).name == name


def test_unknown_method_suggests_close_names():
    with pytest.raises(OnnxplainError, match=r"did you mean gradcam"):
        Explainer(tiny_cnn()).explain(_x(), method="gradcan")
    with pytest.raises(OnnxplainError, match="choose from: gradient, saliency"):
        METHODS.get("zzz")


@pytest.mark.parametrize(
    "method,options,needle",
    [
        ("integrated_gradients", {"steps": 0}, "at least 1"),
        ("smoothgrad", {"noise": -1}, "at least 0"),
        ("smoothgrad", {"noise": float("inf")}, "finite"),
        ("smoothgrad", {"samples": 0}, "at least 1"),
        ("smoothgrad", {"samples": 2.5}, "integer"),
        ("integrated_gradients", {"baseline": float("nan")}, "NaN"),
        ("deeplift", {"baseline": "abc"}, "number or a float array"),
        ("rise", {"p": 0}, "above 0"),
        ("occlusion", {"score": "prob"}, "softmax, logit"),
        ("occlusion", {"fill": "blue"}, "number or one of mean"),
        ("occlusion", {"window": 0}, "a positive integer or a pair"),
        ("occlusion", {"stride": (2, 0)}, "a positive integer or a pair"),
        ("gradient", {"steps": 4}, "an option of integrated_gradients"),
        ("gradcam", {"layr": "c"}, "did you mean 'layer'"),
        ("gradient", {"batch_size": 0}, "at least 1"),
    ],
)
def test_option_values_are_validated(method, options, needle):
    with pytest.raises(OnnxplainError, match=re.escape(needle)):
        Explainer(tiny_cnn()).run(_x(), method, **options)


def test_gradcam_layer_is_used_not_ignored():
    ex, x = Explainer(tiny_cnn()), _x()
    default = ex.explain(x, "gradcam")
    np.testing.assert_array_equal(ex.explain(x, "gradcam", layer="r"), default)  # the automatic choice is 'r'
    conv = ex.explain(x, "gradcam", layer="c")  # the conv output, before its ReLU
    assert not np.allclose(conv, default)
    with pytest.raises(OnnxplainError, match="nope"):
        ex.explain(x, "gradcam", layer="nope")


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in ATTENTION_ONLY])
def test_every_method_runs_and_keeps_its_declared_map(name):
    """Attention rollout and Chefer's method need attention maps: tests/test_attention.py runs them on ViTs."""
    m = METHODS.get(name)
    if name == "d_rise":  # explains detections: the hand-written detector head of test_targets
        from test_targets import yolo_head

        x = np.random.default_rng(0).uniform(size=(2, 1, 8, 8)).astype(np.float32)
        ex = Explainer(yolo_head())
        ex.task = "detect"  # its [N, 6, 16] output is too small for the guess
        a = ex.run(x, name, n_masks=40, cells=4).attribution
        assert a.shape == (2, 1, 8, 8) and np.isfinite(a).all() and a.min() >= 0 and a.max() > 0
        with pytest.raises(OnnxplainError, match="Detection target"):
            Explainer(tiny_cnn()).run(_x(), name, n_masks=4)
        return
    res = Explainer(tiny_cnn()).run(_x(), name, **SMALL.get(name, {}))
    a = res.attribution
    assert np.isfinite(a).all() and np.abs(a).max() > 0
    assert a.shape == ((2, 3, 8, 8) if m.shape == "the input's" else (2, 1, 8, 8))
    if m.map in ("non-negative", "offset"):
        assert a.min() >= 0, (name, a.min())


def test_cli_comma_separated_methods_and_option_checks(tmp_path):
    np.save(tmp_path / "x.npy", _x(1))
    import onnx

    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    r = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "m.onnx"),
            str(tmp_path / "x.npy"),
            "-m",
            "Grad-CAM,saliency",
            "-d",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "x.gradcam.npy").is_file() and (tmp_path / "o" / "x.saliency.npy").is_file()
    r = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "m.onnx"),
            str(tmp_path / "x.npy"),
            "-m",
            "gradient",
            "--window",
            "4",
            "-d",
            str(tmp_path / "p"),
        ],
    )
    assert r.exit_code == 2 and "--window does not apply to gradient (it is an option of occlusion)" in r.output
    assert not (tmp_path / "p").exists()
    r = runner.invoke(app, ["explain", "--help"])
    assert r.exit_code == 0 and "--n-masks" in r.output and "--layer" in r.output
    r = runner.invoke(app, ["export", str(tmp_path / "m.onnx"), "-m", "occlusion", "-o", str(tmp_path / "e.onnx")])
    assert r.exit_code == 2 and "no single explanation graph" in r.output
