"""The CLI with the rule-set methods: --rules files, --baseline, every method exports and explains."""

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from models import tiny_cnn
from onnxplain.cli import app
from onnxplain.methods.attention import ATTENTION_ONLY
from onnxplain.methods.catalog import METHODS
from onnxplain.runtime.session import make_session

runner = CliRunner()


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save_model(tiny_cnn(), str(p))
    return p


def test_bad_rules_file_is_one_line_exit_2(model, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nops = ["Relu"]\nrule = "sideways"\n')
    out = tmp_path / "o.onnx"
    r = runner.invoke(app, ["export", str(model), "-m", "guided_backprop", "--rules", str(bad), "-o", str(out)])
    assert r.exit_code == 2
    assert "unknown rule 'sideways'" in r.output and str(bad) in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_rules_file_changes_the_exported_graph(model, tmp_path):
    mine = tmp_path / "deconv_everywhere.toml"
    mine.write_text('name = "mine"\n[[rule]]\nops = ["Relu"]\nrule = "deconvnet"\n')
    outs = {}
    for tag, extra in [("default", []), ("mine", ["--rules", str(mine)])]:
        out = tmp_path / f"{tag}.onnx"
        r = runner.invoke(app, ["export", str(model), "-m", "guided_backprop", "-o", str(out), *extra])
        assert r.exit_code == 0, r.output
        x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
        outs[tag] = make_session(onnx.load(str(out))).run(["attribution"], {"x": x})[0]
    assert not np.allclose(outs["default"], outs["mine"])


EXPORTABLE = sorted(m.name for m in METHODS if m.exportable and m.name not in ATTENTION_ONLY)  # test_attention.py
SMALL = {
    "integrated_gradients": ["--steps", "4"],
    "smoothgrad": ["--samples", "2"],
    "smoothgrad_sq": ["--samples", "2"],
}


@pytest.mark.parametrize("method", EXPORTABLE)
def test_every_method_exports_and_explains(model, tmp_path, method):
    out = tmp_path / "e.onnx"
    r = runner.invoke(app, ["export", str(model), "-m", method, "-o", str(out), *SMALL.get(method, [])])
    assert r.exit_code == 0, r.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    small = SMALL.get(method, []) + (["--baseline", "0.1"] if METHODS.get(method).option("baseline") else [])
    r = runner.invoke(
        app, ["explain", str(model), str(tmp_path / "x.npy"), "-m", method, "-d", str(tmp_path / "o"), *small]
    )
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "o" / f"x.{method}.npy")
    assert np.isfinite(a).all() and np.abs(a).max() > 0


def test_export_deeplift_baseline_input_flag(model, tmp_path):
    """Default: a fixed zero baseline (no input); --baseline-input: an input that changes the map;
    the flag on a method without a baseline is refused in one line."""
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    maps = {}
    for tag, extra in (("fixed", []), ("input", ["--baseline-input"])):
        out = tmp_path / f"{tag}.onnx"
        r = runner.invoke(app, ["export", str(model), "-m", "deeplift", "-o", str(out), *extra])
        assert r.exit_code == 0, r.output
        g = onnx.load(str(out))
        assert ("baseline" in {i.name for i in g.graph.input}) == (tag == "input")
        maps[tag] = make_session(g).run(["attribution"], {"x": x})[0]
    np.testing.assert_allclose(maps["fixed"], maps["input"], rtol=1e-5, atol=1e-7)
    sess = make_session(onnx.load(str(tmp_path / "input.onnx")))
    shifted = sess.run(["attribution"], {"x": x, "baseline": np.full_like(x, 0.5)})[0]
    assert not np.allclose(shifted, maps["input"])
    r = runner.invoke(app, ["export", str(model), "-m", "gradient", "-o", str(tmp_path / "g.onnx"), "--baseline-input"])
    assert r.exit_code == 2
    assert "--baseline-input does not apply to gradient" in r.output
    assert not (tmp_path / "g.onnx").exists()
