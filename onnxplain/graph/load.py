"""Safe loading of untrusted ONNX files.

* never follows external-data locations outside the model's folder;
* turns protobuf/checker failures into one-line :class:`OnnxplainError`;
* never writes to the input file.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from onnxplain.errors import OnnxplainError

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()


def _external_tensors(model: onnx.ModelProto):
    yield from external_data_helper._get_all_tensors(model)


def check_external_paths(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that are absolute or escape ``base_dir``."""
    root = base_dir.resolve()
    for tensor in _external_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if "\0" in location:
            raise OnnxplainError(
                f"tensor '{tensor.name}': external data location {location!r} contains a NUL character"
            )
        if not location or os.path.isabs(location):
            raise OnnxplainError(f"tensor '{tensor.name}': external data location '{location}' is not a relative path")
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise OnnxplainError(
                f"tensor '{tensor.name}': external data location '{location}' points outside the model's folder"
            )
        if not target.is_file():
            raise OnnxplainError(f"tensor '{tensor.name}': external data file '{location}' does not exist")


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise OnnxplainError("model imports no default-domain (ai.onnx) opset")


def load_model(path: str | os.PathLike | onnx.ModelProto, load_weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX model from ``path`` safely; a ``ModelProto`` is copied, never modified."""
    if isinstance(path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path)
        base_dir = None
        if any(external_data_helper.uses_external_data(t) for t in _external_tensors(model)):
            raise OnnxplainError("this in-memory model refers to external data; pass the model's file path instead")
    else:
        p = Path(path)
        if not p.exists():
            raise OnnxplainError(f"no such file: {p}")
        if not p.is_file():
            raise OnnxplainError(f"not a file: {p}")
        try:
            model = onnx.load(str(p), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends
            raise OnnxplainError(f"{p} is not a valid ONNX model ({type(exc).__name__})") from None
        base_dir = p.parent
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise OnnxplainError("not a valid ONNX model: it has no graph nodes")
    opset = opset_of(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise OnnxplainError(f"opset {opset} is not supported (supported: {MIN_OPSET}..{MAX_OPSET})")
    if base_dir is not None:
        check_external_paths(model, base_dir)
        if load_weights:
            try:
                external_data_helper.load_external_data_for_model(model, str(base_dir))
            except Exception as exc:
                raise OnnxplainError(f"cannot read external data of {path}: {exc}") from None
    try:
        onnx.checker.check_model(model if model.ByteSize() < 2**31 - 1 else _weightless(model))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise OnnxplainError(f"invalid ONNX model: {first}") from None
    return model


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without initializer payloads, for checks on models over protobuf's 2 GB limit."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for init in light.graph.initializer:
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        init.external_data.add(key="location", value="stripped")
    return light


def save_model_atomic(
    model: onnx.ModelProto, path: str | os.PathLike, external_threshold: int = 2**31 - 2**26, check=None
) -> Path:
    """Write ``model`` to ``path`` atomically, through :mod:`onnxplain.io.outputs` (the running
    transaction, or one of its own): nothing is left behind on failure, never a half-written file.

    Models whose weights exceed ``external_threshold`` bytes are saved with one external-data
    file beside them (``<name>.data``); ``check(path)`` is then called on the temporary model (its
    data written) before anything is renamed into place.
    """
    from onnxplain.io.outputs import Outputs, active

    out = Path(path)
    tx = active()
    if tx is not None:
        return _save_model(tx, model, out, external_threshold, check)
    with Outputs() as own:
        own.file(out)
        _save_model(own, model, out, external_threshold, check)
    return out


def _save_model(tx, model: onnx.ModelProto, out: Path, external_threshold: int, check) -> Path:
    from onnxplain.errors import os_message

    data_name = out.name + ".data"
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    try:
        if weight_bytes > external_threshold:
            tmp_data = tx.temp(out.with_name(data_name), suffix=".data")
            tmp = tx.temp(out, suffix=".onnx")
            onnx.save_model(
                model,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=tmp_data.name,
                size_threshold=1024,
            )
            if check is not None:
                check(tmp)
            final = onnx.load(str(tmp), load_external_data=False)  # point it at the final data name
            for t in external_data_helper._get_all_tensors(final):
                for e in t.external_data:
                    if e.key == "location":
                        e.value = data_name
            _write(tmp, final.SerializeToString())
        else:
            tmp = tx.temp(out, suffix=".onnx")
            _write(tmp, model.SerializeToString())
            if check is not None:
                check(tmp)
    except OSError as exc:
        raise OnnxplainError(f"cannot write {out}: {os_message(exc)}") from None
    return out


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
