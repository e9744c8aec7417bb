"""Without the optional extra, the dataset commands say how to install it, in one line, exit code 2."""

import sys

import pytest
from typer.testing import CliRunner

from onnxplain.cli import app
from onnxplain.errors import OnnxplainError


@pytest.fixture
def no_ray(monkeypatch):
    for name in [n for n in sys.modules if n == "ray" or n.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError


def test_library_says_how_to_install(no_ray, tmp_path):
    from onnxplain.dataset import explain_dataset

    with pytest.raises(OnnxplainError, match=r'pip install "onnxplain\[ray\]"'):
        explain_dataset("model.onnx", tmp_path, output=tmp_path / "out")


@pytest.mark.parametrize(
    "args", [["explain-dataset", "demo", "{tmp}"], ["evaluate", "demo", "shapes", "--ray", "-d", "{tmp}/ev"]]
)
def test_commands_say_how_to_install(no_ray, tmp_path, args):
    res = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        'error: dataset runs need Ray Data, which is not installed; install it with: pip install "onnxplain[ray]"'
    ]
    assert not (tmp_path / "ev").exists()
