"""Installation and devices: the onnxruntime distribution per platform, a defensive import, --device."""

import importlib.metadata
from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement

from onnxplain import OnnxplainError
from onnxplain.runtime import session

ROOT = Path(__file__).resolve().parent.parent


def _runtime_for(env: dict) -> list[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return [r.name for r in reqs if r.name.startswith("onnxruntime") and (r.marker is None or r.marker.evaluate(env))]


@pytest.mark.parametrize(
    "platform,machine,want",
    [
        ("linux", "x86_64", "onnxruntime-gpu"),
        ("win32", "AMD64", "onnxruntime-gpu"),
        ("darwin", "arm64", "onnxruntime"),
        ("linux", "aarch64", "onnxruntime"),
        ("darwin", "x86_64", "onnxruntime"),
    ],
)
def test_one_onnxruntime_distribution_per_platform(platform, machine, want):
    env = {"sys_platform": platform, "platform_machine": machine}
    assert _runtime_for(env) == [want]
    assert isinstance(Marker("sys_platform == 'linux'"), Marker)


def test_two_distributions_sharing_the_module_get_one_line(monkeypatch, capsys):
    """Both installed: it works now (one note says how to keep one); once one is uninstalled the module
    is broken, and that is one error line saying what to do."""
    import onnxruntime

    real = importlib.metadata.version

    def fake(name):
        return {"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.31.1"}.get(name) or real(name)

    monkeypatch.setattr(importlib.metadata, "version", fake)
    session.ort.cache_clear()
    session._said.clear()
    try:
        assert session.ort() is onnxruntime
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "onnxruntime 1.20.0 and onnxruntime-gpu 1.31.1 are installed together" in err[0]
        assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in err[0]
        session.ort.cache_clear()
        monkeypatch.delattr(onnxruntime, "InferenceSession")  # what `pip uninstall onnxruntime` leaves behind
        with pytest.raises(OnnxplainError, match=r"share its files\).* pip uninstall -y onnxruntime onnxruntime-gpu"):
            session.ort()
    finally:
        monkeypatch.undo()
        session.ort.cache_clear()


def test_a_broken_module_gets_one_line(monkeypatch):
    import onnxruntime

    monkeypatch.delattr(onnxruntime, "set_default_logger_severity")
    session.ort.cache_clear()
    try:
        with pytest.raises(OnnxplainError, match="onnxruntime cannot be used in this environment .* reinstall"):
            session.ort()
    finally:
        monkeypatch.undo()
        session.ort.cache_clear()


def test_devices():
    assert session.providers_for("cpu") == ["CPUExecutionProvider"]
    assert session.providers_for("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(OnnxplainError, match="device must be one of auto, cpu, cuda"):
        session.providers_for("gpu")
    with pytest.raises(OnnxplainError, match="has no FooExecutionProvider"):
        session.providers_for(providers=["FooExecutionProvider"])
    if session.cuda_unusable_reason():  # this machine: asking for CUDA is an error that says why
        with pytest.raises(OnnxplainError, match="--device cuda: .*cuDNN"):
            session.providers_for("cuda")
    else:  # a machine with a GPU: the session really starts on CUDA
        from models import tiny_cnn

        s = session.make_session(tiny_cnn(), session.providers_for("cuda"))
        assert s.get_providers()[0] == "CUDAExecutionProvider"
