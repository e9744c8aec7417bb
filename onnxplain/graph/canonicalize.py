"""Canonicalisation: shapes inferred, Identity/Dropout removed, constants folded, control flow
inlined or unrolled where static, logits found.

The result is a :class:`Canonical` holding the graphsurgeon graph in topological order, its
opset, and the original model's metadata, ready for the backward rewrite.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError
from onnxplain.graph.builder import is_float
from onnxplain.graph.control_flow import inline_control_flow
from onnxplain.graph.dequantize import dequantize
from onnxplain.graph.fuse import fuse as fuse_decompositions
from onnxplain.graph.fuse import lower
from onnxplain.graph.load import load_model, opset_of
from onnxplain.graph.precision import to_float32

SQUASHING = ("Softmax", "LogSoftmax", "Sigmoid")
PASS_THROUGH = ("Identity", "Dropout")


@dataclass
class Canonical:
    graph: gs.Graph
    opset: int
    model: onnx.ModelProto  # the original (loaded) model, for metadata
    fused: list = field(default_factory=list)  # graph.fuse.Fusion: decompositions fused into single ops

    def copy(self) -> Canonical:
        """A copy whose graph can be rewritten without touching this one (nodes and tensors are new;
        weights are shared, and no rewrite changes a weight in place)."""
        return Canonical(graph=self.graph.copy(), opset=self.opset, model=self.model, fused=list(self.fused))

    def tensor(self, name: str):
        t = self.graph.tensors().get(name)
        if t is None:
            raise OnnxplainError(f"no tensor named '{name}' in the model")
        return t

    def float_inputs(self):
        return [t for t in self.graph.inputs if is_float(t)]

    def input(self, name: str | None = None):
        """The explained tensor: a float graph input by name (default: the first), any inner float tensor
        by name, or, for an integer input (token ids, bytes), the first float tensor computed from it."""
        if name is not None:
            for t in self.graph.inputs:
                if t.name == name:
                    return t if is_float(t) else self._embedding(t)
            t = self.graph.tensors().get(name)
            if t is not None and t.inputs and is_float(t):
                return t
            if t is not None:
                raise OnnxplainError(
                    f"tensor '{name}' is not a float tensor computed by the model; only those can be explained"
                )
            raise OnnxplainError(
                f"model has no input or tensor named '{name}' (inputs: {[t.name for t in self.graph.inputs]})"
            )
        floats = self.float_inputs()
        if floats:
            return floats[0]
        if not self.graph.inputs:
            raise OnnxplainError("model has no input to explain")
        return self._embedding(self.graph.inputs[0])

    def _embedding(self, ids):
        """The first float tensor computed from integer input ``ids`` (``specialise.first_float``)."""
        from onnxplain.graph.specialise import first_float

        name = first_float(self.model, ids.name)
        if name is not None and name in self.graph.tensors():
            return self.graph.tensors()[name]
        raise OnnxplainError(
            f"input '{ids.name}' is not a float tensor, and no float tensor is computed from it "
            "(an embedding) to explain instead"
        )

    def output(self, name: str | None = None):
        if name is not None:
            for t in self.graph.outputs:
                if t.name == name:
                    return t
            return self.tensor(name)  # any inner tensor may be explained by name
        floats = [t for t in self.graph.outputs if is_float(t)]
        if not floats:
            raise OnnxplainError("model has no float output to explain")
        return floats[0]


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation, then onnxruntime's symbolic inference where
    dimensions are still unknown (it merges symbols, e.g. the batch axis through Resize).

    Inference runs on a copy without large weight payloads, so it is fast and works for models
    over protobuf's 2 GB limit; the inferred ``value_info`` is copied back.
    """
    model = _negative_dims_unknown(model)
    light = _without_payloads(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return model
    if _unknown_dims(inferred):
        try:
            from onnxplain.runtime.quiet import scratch_cwd

            with warnings.catch_warnings(), scratch_cwd():  # it may leave sym_shape_infer_temp.onnx in the cwd
                warnings.simplefilter("ignore")
                symbolic = _symbolic_inference().infer_shapes(inferred, auto_merge=True)
            _fill_unknown_dims(inferred, symbolic)
        except Exception:
            pass  # keep onnx's answer; the walker copes with unknown dims where the opset allows
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for part in ("value_info", "output"):
        del getattr(out.graph, part)[:]
        getattr(out.graph, part).extend(getattr(inferred.graph, part))
    _copy_subgraph_value_info(inferred.graph, out.graph)
    return out


_ONE = onnx.TensorShapeProto.Dimension(dim_value=1)


def _negative_dims_unknown(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with declared negative dimensions made unknown: paddle2onnx writes -1 for a dynamic axis
    (PP-OCR's classifier: ``x[-1, 3, ?, ?]``), which is not a size. The model itself when it has none."""

    def dims(m):
        for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
            for i, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value < 0:
                    yield vi.name, i, d

    if next(dims(model), None) is None:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inputs = {vi.name for vi in out.graph.input}
    for name, i, d in list(dims(out)):
        d.Clear()
        if name in inputs:  # a named symbol, which inference carries through (an empty dim it may guess as 1)
            d.dim_param = f"{name}_dim{i}"
    return out


def _copy_subgraph_value_info(src: onnx.GraphProto, dst: onnx.GraphProto) -> None:
    """Copy inferred shapes into If/Loop/Scan bodies (the two graphs have the same nodes)."""
    for a_node, b_node in zip(src.node, dst.node):
        for a, b in zip(a_node.attribute, b_node.attribute):
            if a.type == onnx.AttributeProto.GRAPH and b.type == onnx.AttributeProto.GRAPH:
                del b.g.value_info[:]
                b.g.value_info.extend(a.g.value_info)
                _copy_subgraph_value_info(a.g, b.g)


@functools.lru_cache(maxsize=1)
def _symbolic_inference():
    """onnxruntime's SymbolicShapeInference, loaded from its file: importing it as
    ``onnxruntime.tools.symbolic_shape_infer`` runs that package's ``__init__``, which imports
    torch whenever torch is installed, and onnxplain must not load torch."""
    import importlib.util

    from onnxplain.runtime.session import ort

    path = Path(ort().__file__).parent / "tools" / "symbolic_shape_infer.py"
    spec = importlib.util.spec_from_file_location("onnxplain._ort_symbolic_shape_infer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SymbolicShapeInference


def _is_unknown(d) -> bool:
    return d.dim_param.startswith("unk__") or not (d.HasField("dim_value") or d.HasField("dim_param"))


def _fill_unknown_dims(inferred: onnx.ModelProto, symbolic: onnx.ModelProto) -> None:
    """Take symbolic inference's dims only where onnx's are unknown and both agree on the rank
    (symbolic inference is wrong for some newer ops, e.g. Resize with ``axes``)."""
    theirs = {
        vi.name: vi.type.tensor_type.shape
        for vi in list(symbolic.graph.value_info) + list(symbolic.graph.output)
        if vi.type.tensor_type.HasField("shape")
    }
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        other = theirs.get(vi.name)
        if other is None or not tt.HasField("shape") or len(other.dim) != len(tt.shape.dim):
            continue
        for mine, sym in zip(tt.shape.dim, other.dim):
            if _is_unknown(mine) and not _is_unknown(sym):
                mine.CopyFrom(sym)


def _without_payloads(model: onnx.ModelProto, limit: int = 1 << 16) -> onnx.ModelProto:
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for init in light.graph.initializer:
        if len(init.raw_data) > limit and init.data_type != onnx.TensorProto.INT64:
            # keep dims and type, which is all inference reads of a weight
            init.ClearField("raw_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            init.external_data.add(key="location", value="onnxplain-stripped")
    return light


def _unknown_dims(model: onnx.ModelProto) -> bool:
    for vi in list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return True
        if any(_is_unknown(d) for d in tt.shape.dim):
            return True
    return False


def _drop_pass_through(graph: gs.Graph) -> None:
    """Bypass Identity and Dropout nodes (Dropout is identity at inference)."""
    outputs = {t.name for t in graph.outputs}
    for node in list(graph.nodes):
        if node.op not in PASS_THROUGH or not node.inputs:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst.name in outputs:
            continue  # a graph output keeps its name; the Identity rule handles it
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the mask is used: leave it
        for consumer in list(dst.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is dst:
                    consumer.inputs[i] = src
        node.outputs.clear()
        node.inputs.clear()


def fold_batchnorm(graph: gs.Graph) -> int:
    """Fold inference BatchNormalization into the Conv that feeds it (as Zennit's canonizer does).

    y = gamma (conv(x) - mean) / sqrt(var + eps) + beta  becomes  conv'(x) with
    W' = W * s and b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps), per output channel.
    Only when the Conv output feeds nothing else and every parameter is a constant.
    Returns the number of folded nodes.
    """
    outputs = {t.name for t in graph.outputs}
    folded = 0
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or len([o for o in bn.outputs if o.outputs or o.name in outputs]) > 1:
            continue
        if bn.attrs.get("training_mode", 0) or not all(isinstance(t, gs.Constant) for t in bn.inputs[1:5]):
            continue
        t = bn.inputs[0]
        conv = t.inputs[0] if len(t.inputs) == 1 else None
        if conv is None or conv.op != "Conv" or len(t.outputs) != 1 or t.name in outputs:
            continue
        w = conv.inputs[1]
        bias = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2].name else None
        if not isinstance(w, gs.Constant) or (bias is not None and not isinstance(bias, gs.Constant)):
            continue
        gamma, beta, mean, var = (c.values.astype(np.float64) for c in bn.inputs[1:5])
        scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        b0 = bias.values.astype(np.float64) if bias is not None else 0.0
        wv = w.values
        new_w = (wv.astype(np.float64) * scale.reshape([-1] + [1] * (wv.ndim - 1))).astype(wv.dtype)
        new_b = ((b0 - mean) * scale + beta).astype(wv.dtype)
        conv.inputs[1] = gs.Constant(f"{w.name}:bnfold:{folded}", new_w)
        b_const = gs.Constant(f"{conv.name or w.name}:bnfold_bias:{folded}", new_b)
        if bias is not None:
            conv.inputs[2] = b_const
        else:
            conv.inputs.append(b_const)
        conv.outputs = [bn.outputs[0]]
        bn.outputs.clear()
        bn.inputs.clear()
        folded += 1
    return folded


def canonicalize(
    model, fold: bool = True, fold_bn: bool = True, fuse: bool = True, probe: dict | list | None = None
) -> Canonical:
    """Load (if a path), infer shapes, drop pass-through nodes, fold constants and BN, sort, and
    fuse exporters' decompositions of activations and LayerNorm (:mod:`onnxplain.graph.fuse`).

    ``probe``: inputs of a concrete shape (zeros will do); shapes that inference still leaves unknown, and
    declared output shapes, are then read from one onnxruntime run on them
    (:func:`onnxplain.graph.specialise.probe_shapes`): an exporter's lost ranks and wrong declarations."""
    model = load_model(model)
    opset = opset_of(model)
    graph = gs.import_onnx(infer_shapes(dequantize(to_float32(model))))
    _drop_pass_through(graph)
    if fold_bn:
        fold_batchnorm(graph)
    graph.cleanup()
    if fold:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _quiet_fold(graph)
        # re-infer shapes: folded Shape/Reshape chains often become static
        graph = gs.import_onnx(infer_shapes(_export(graph, model)))
    for _ in range(8):  # If on a constant condition, static Loop/Scan (control_flow.py); an inlined branch
        if not inline_control_flow(graph, opset):  # may hold Ifs whose conditions fold once its shapes are known
            break
        graph.cleanup().toposort()
        graph = gs.import_onnx(infer_shapes(_export(graph, model)))
        if fold:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _quiet_fold(graph)
    if probe is not None:
        from onnxplain.graph.specialise import probe_shapes, unknown_shapes

        graph.toposort()
        m = _export(graph, model)
        names = unknown_shapes(m) + [o.name for o in m.graph.output]
        batch = None
        if isinstance(probe, list) and len(probe) > 1:  # a dynamic batch: inference may have declared it 1
            names += [v.name for v in m.graph.value_info if v.type.tensor_type.shape.dim[:1] == [_ONE]]
            probed = next(v for v in m.graph.input if v.name in probe[0])
            batch = probed.type.tensor_type.shape.dim[0].dim_param or None
        names = list(dict.fromkeys(names))
        graph = gs.import_onnx(probe_shapes(m, probe, names, replace_outputs=True, varying=batch))
    graph.toposort()
    for i, node in enumerate(graph.nodes):
        node.name = node.name or f"{node.op}_{i}"
    fused = fuse_decompositions(graph) if fuse else []
    return Canonical(graph=graph, opset=opset, model=model, fused=fused)


def _quiet_fold(graph: gs.Graph) -> None:
    level = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.CRITICAL
    try:
        # flatten_subgraphs=False: control_flow.py inlines constant Ifs (graphsurgeon drops outputs of
        # branches that end in Identity nodes)
        graph.fold_constants(error_ok=True, flatten_subgraphs=False)
        graph.cleanup()
    except Exception:
        pass  # folding is an optimisation; the unfolded graph is still correct
    finally:
        gs.logger.G_LOGGER.severity = level


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    m = gs.export_onnx(graph, do_type_check=False)
    m.ir_version = like.ir_version
    del m.opset_import[:]
    m.opset_import.extend(like.opset_import)
    lower(m, graph)  # fused decompositions back as the model wrote them
    return m


def find_logits(graph: gs.Graph, out):
    """Walk back from ``out`` through Softmax/LogSoftmax/Sigmoid (and Identity, float Casts) to the logits.

    Returns (logits tensor, list of op types stripped).
    """
    stripped = []
    t = out
    while t.inputs:
        producer = t.inputs[0]
        float_cast = producer.op == "Cast" and is_float(producer.inputs[0])  # e.g. a float16 model's output
        if producer.op in SQUASHING or producer.op == "Identity" or float_cast:
            stripped.append(producer.op)
            t = producer.inputs[0]
        else:
            break
    if not any(op in SQUASHING for op in stripped):
        return out, []
    return t, [op for op in stripped if op in SQUASHING]


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping the original model's IR version, opsets and metadata."""
    m = _export(graph, like)
    m.producer_name = like.producer_name
    m.producer_version = like.producer_version
    m.doc_string = like.doc_string
    m.graph.name = like.graph.name
    del m.metadata_props[:]
    m.metadata_props.extend(like.metadata_props)
    return m
