"""Sanity checks by model-parameter randomisation.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim 2018, "Sanity Checks for Saliency Maps"
(NeurIPS): re-initialise the learned weights of a trained model and check that the explanation
changes. *Cascading* randomisation redraws the layers from the output (top) down, cumulatively;
*independent* randomisation redraws one layer at a time, the others keeping their trained
weights. The maps of each randomised model are compared with the original's by Spearman rank
correlation (signed and absolute) and SSIM (:mod:`onnxplain.evaluation.metrics.similarity`).

What counts as a layer: a node of the *canonical* graph (:func:`onnxplain.graph.canonicalize.canonicalize`:
constants folded, BatchNormalization folded into the Conv before it) whose op holds learned weights
(:data:`WEIGHT_OPS`, :data:`NORM_OPS`) and which has at least one floating-point constant input.
Those constants are its parameters (for normalisation ops only the affine scale and bias; running
statistics are not learned and are left alone). Weights reaching a layer through a computation
that constant folding could not remove are not constants, and are not counted.

All models handed out here are copies of the canonical model, exported once
(:func:`canonical_model`), so that layer and parameter names agree everywhere; canonicalising such a
model again keeps those names.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxplain.errors import OnnxplainError
from onnxplain.evaluation.metrics.similarity import compare
from onnxplain.graph.canonicalize import canonicalize, export_graph

#: ops whose constant float inputs (all of them) are learned weights
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")
#: normalisation ops with an affine scale and bias at inputs 1 and 2
NORM_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "BatchNormalization")


@dataclass
class Layer:
    """One layer holding learned weights."""

    name: str  # the node's name in the canonical graph (unique)
    op: str  # op type
    params: list[str] = field(default_factory=list)  # names of the float initializers it owns


def canonical_model(model) -> onnx.ModelProto:
    """The canonical graph of ``model`` (path or ModelProto) exported as a new ModelProto."""
    can = canonicalize(model)
    return export_graph(can.graph, can.model)


def _float_initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer if onnx.helper.tensor_dtype_to_np_dtype(t.data_type).kind == "f"}


def _layers_of(model: onnx.ModelProto) -> list[Layer]:
    """Weight layers of an already canonical proto, top (output side) first."""
    floats = _float_initializers(model)
    layers = []
    for node in model.graph.node:  # canonical graphs are topologically sorted
        if node.op_type in WEIGHT_OPS:
            inputs = list(node.input)
        elif node.op_type in NORM_OPS:
            inputs = list(node.input[1:3])
        else:
            continue
        params = list(dict.fromkeys(n for n in inputs if n in floats))
        if params:
            layers.append(Layer(node.name, node.op_type, params))
    if not layers:
        raise OnnxplainError(
            "the model has no layers with learned weights (Conv, ConvTranspose, Gemm, MatMul, "
            "Einsum or affine normalisation with constant float parameters) to randomise"
        )
    return layers[::-1]


def weight_layers(model) -> list[Layer]:
    """The layers that hold learned weights, ordered from the output down (reverse topological order).

    Raises OnnxplainError if there are none.
    """
    return _layers_of(canonical_model(model))


def redraw(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with the shape, dtype, mean and standard deviation of ``values``; a tensor with
    standard deviation 0 (or no elements) is returned unchanged."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return values
    mean, std = v.mean(), v.std()
    if not std > 0:
        return values
    return rng.normal(mean, std, size=v.shape).astype(values.dtype)


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the parameter ``name``."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _randomised(model: onnx.ModelProto, layers: list[Layer], names: Iterable[str], seed: int) -> onnx.ModelProto:
    by_name = {layer.name: layer for layer in layers}
    names = list(names)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = ", ".join(by_name)
        raise OnnxplainError(f"no weight layer named {', '.join(map(repr, unknown))}; the layers are: {known}")
    params = {p for n in names for p in by_name[n].params}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in params:
            t.CopyFrom(numpy_helper.from_array(redraw(numpy_helper.to_array(t), _rng(seed, t.name)), t.name))
    return out


def randomise(model, layers: list[str], seed: int = 0) -> onnx.ModelProto:
    """A copy of the canonical model with the named layers' parameters redrawn (see :func:`redraw`).

    The input model is never modified. Deterministic given ``seed``; a parameter's new values depend
    only on the seed and its name, not on which other layers are randomised.
    """
    if isinstance(layers, str):
        layers = [layers]
    can = canonical_model(model)
    return _randomised(can, _layers_of(can), layers, seed)


def cascading(model, seed: int = 0) -> Iterator[tuple[str, onnx.ModelProto]]:
    """Cascading randomisation (Adebayo et al. 2018): yields ``(layer name, model)`` top first, the
    model having that layer and every layer above it randomised."""
    can = canonical_model(model)
    layers = _layers_of(can)
    for k, layer in enumerate(layers):
        yield layer.name, _randomised(can, layers, [lay.name for lay in layers[: k + 1]], seed)


def independent(model, seed: int = 0) -> Iterator[tuple[str, onnx.ModelProto]]:
    """Independent randomisation (Adebayo et al. 2018): yields ``(layer name, model)`` top first, the
    model having only that layer randomised."""
    can = canonical_model(model)
    layers = _layers_of(can)
    for layer in layers:
        yield layer.name, _randomised(can, layers, [layer.name], seed)


def _check_maps(maps, n: int, what: str) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] != n:
        raise OnnxplainError(f"{what} must be heatmaps [N, H, W] with N = {n}, got shape {maps.shape}")
    return maps


def randomisation_scores(
    explain: Callable,
    x,
    target,
    models: Iterable[tuple[str, onnx.ModelProto]],
    reference,
    *,
    progress: Callable | None = None,
) -> list[dict]:
    """Compare the maps of randomised models with the original model's maps, image by image.

    ``explain(model, x, target) -> heatmaps [N, H, W]`` does the explaining; ``models`` is what
    :func:`cascading` or :func:`independent` yields; ``reference`` is the original model's heatmaps
    ``[N, H, W]`` (``explain(original, x, target)``). Returns one row per model:
    ``{"layer", "spearman": [N], "spearman_abs": [N], "ssim": [N], "maps": [N, H, W]}``
    (:func:`score_maps`). ``progress(done, total)`` is called after each model when ``models`` has a length, else
    ``progress(done, None)``.
    """
    reference = _check_maps(reference, len(x), "the reference maps")
    total = len(models) if hasattr(models, "__len__") else None
    rows = []
    for label, model in models:
        rows.append(score_maps(label, explain(model, x, target), reference))
        if progress is not None:
            progress(len(rows), total)
    return rows


def score_maps(label: str, maps, reference) -> dict:
    """One row of :func:`randomisation_scores`: the maps ``[N, H, W]`` of a randomised model
    compared with the original's, image by image. A map that became constant (a CAM after its
    ReLU, often) while the original is not shares no ordering with it: its rank correlations count
    as 0, not as undefined."""
    reference = _check_maps(reference, len(reference), "the reference maps")
    maps = _check_maps(maps, len(reference), f"the maps of '{label}'")
    if maps.shape != reference.shape:
        raise OnnxplainError(f"the maps of '{label}' have shape {maps.shape}, the reference {reference.shape}")
    scores = [compare(r, m) for r, m in zip(reference, maps)]
    row = {"layer": label, "maps": maps}
    for key in ("spearman", "spearman_abs", "ssim"):
        row[key] = np.array([s[key] for s in scores])
    lost = (np.ptp(maps, axis=(1, 2)) == 0) & (np.ptp(reference, axis=(1, 2)) > 0)
    row["spearman"][lost] = row["spearman_abs"][lost] = 0.0
    return row
