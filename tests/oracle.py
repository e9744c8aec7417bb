"""Independent oracles for backward rules.

* :func:`to_float64` rewrites a model to float64 so that ``onnx.reference`` can run it exactly;
* :func:`check_vjp` compares the exported gradient graph (run in float64 by the reference
  evaluator) with central finite differences of the forward model along random directions:
  ``<vjp(w), u>`` against ``(F(x + h u) - F(x - h u)) / 2h`` with ``F = sum(w * f)``;
* :func:`case` builds a one-node model for a per-op test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_loop import Loop as _ReferenceLoop
from onnx.reference.ops.op_resize import Resize as _ReferenceResize
from onnx.reference.ops.op_scan import Scan as _ReferenceScan
from rnn_reference import GRUByDefinition, LSTMByDefinition, RNNByDefinition

import onnxplain
from onnxplain.runtime.session import make_session

F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE
# inputs that stay float32 whatever the data type (Resize/Upsample scales)
_KEEP_F32 = {("Resize", 2), ("Upsample", 1)}


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy of ``model``: tensors, Cast targets and constants, not Resize scales; the
    subgraphs of If/Loop/Scan likewise."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _graph_to_float64(m.graph)
    return m


def _graph_to_float64(g: onnx.GraphProto) -> None:
    keep = {n.input[i] for n in g.node for (op, i) in _KEEP_F32 if n.op_type == op and len(n.input) > i}
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == F32:
            vi.type.tensor_type.elem_type = F64
    del g.value_info[:]
    for i, init in enumerate(g.initializer):
        if init.data_type == F32 and init.name not in keep:
            g.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name)
            )
    for node in g.node:
        for a in node.attribute:
            if a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT and a.i == F32:
                a.i = F64
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F32 and node.output[0] not in keep:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if a.type == onnx.AttributeProto.GRAPH:
                _graph_to_float64(a.g)
            for sub in a.graphs:
                _graph_to_float64(sub)


class ConvTransposeByDefinition(OpRun):
    """ConvTranspose from its definition (onnx.reference's own mis-slices weights when group > 1).

    y[n, g*Co + o, s*i + d*k - pad_begin] += x[n, g*Ci + c, i] * W[g*Ci + c, o, k]
    """

    op_domain = ""

    def _run(
        self,
        x,
        w,
        bias=None,
        auto_pad=None,
        dilations=None,
        group=None,
        kernel_shape=None,
        output_padding=None,
        output_shape=None,
        pads=None,
        strides=None,
    ):
        nd = x.ndim - 2
        k = list(w.shape[2:])
        s, d = list(strides or [1] * nd), list(dilations or [1] * nd)
        op = list(output_padding or [0] * nd)
        group = group or 1
        full = [s[i] * (x.shape[2 + i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 for i in range(nd)]
        if output_shape is not None:
            total = [full[i] - output_shape[-nd:][i] for i in range(nd)]
            upper = auto_pad in ("SAME_UPPER", b"SAME_UPPER")
            pb = [t // 2 if upper else t - t // 2 for t in total]
            pe = [t - p for t, p in zip(total, pb)]
        else:
            pads = list(pads or [0] * (2 * nd))
            pb, pe = pads[:nd], pads[nd:]
        ci, co = w.shape[0] // group, w.shape[1]
        buf = np.zeros((x.shape[0], co * group, *full), dtype=x.dtype)
        for g in range(group):
            xg, wg = x[:, g * ci : (g + 1) * ci], w[g * ci : (g + 1) * ci]
            for kk in np.ndindex(*k):
                contrib = np.tensordot(xg, wg[(slice(None), slice(None)) + kk], axes=([1], [0]))
                contrib = np.moveaxis(contrib, -1, 1)
                idx = tuple(
                    slice(kk[i] * d[i], kk[i] * d[i] + s[i] * (x.shape[2 + i] - 1) + 1, s[i]) for i in range(nd)
                )
                buf[(slice(None), slice(g * co, (g + 1) * co)) + idx] += contrib
        crop = tuple(slice(pb[i], full[i] - pe[i]) for i in range(nd))
        y = buf[(slice(None), slice(None)) + crop]
        if bias is not None:
            y = y + bias.reshape([1, -1] + [1] * nd)
        return (y,)


ConvTransposeByDefinition.__name__ = "ConvTranspose"


class ErfFloat64(OpRun):
    """Erf in the input's precision (onnx.reference's own rounds every value to float32)."""

    op_domain = ""

    def _run(self, x):
        from math import erf

        return (np.vectorize(erf, otypes=[x.dtype])(x).astype(x.dtype),)


ErfFloat64.__name__ = "Erf"


class GeluByDefinition(OpRun):
    """Gelu (opset 20) from its definition; onnx.reference expands the function body, whose Erf
    rounds to float32."""

    op_domain = ""

    def _run(self, x, approximate=None):
        from math import erf

        if approximate in ("tanh", b"tanh"):
            return ((0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))).astype(x.dtype),)
        cdf = 0.5 * (1 + np.vectorize(erf, otypes=[x.dtype])(x / np.sqrt(2)))
        return ((x * cdf).astype(x.dtype),)


GeluByDefinition.__name__ = "Gelu"


def _softmax_axes(op: OpRun, ndim: int):
    """Softmax/LogSoftmax reduce over ``axis`` from opset 13 (default -1); before 13 the input is
    coerced to 2-D at ``axis`` (default 1), i.e. reduced over every axis from ``axis`` on
    (onnx.reference applies the opset-13 semantics to every opset)."""
    opset = op.run_params["opsets"][""]
    axis = next((a.i for a in op.onnx_node.attribute if a.name == "axis"), -1 if opset >= 13 else 1) % ndim
    return (axis,) if opset >= 13 else tuple(range(axis, ndim))


class SoftmaxByOpset(OpRun):
    op_domain = ""

    def _run(self, x, axis=None):
        ax = _softmax_axes(self, x.ndim)
        e = np.exp(x - x.max(axis=ax, keepdims=True))
        return ((e / e.sum(axis=ax, keepdims=True)).astype(x.dtype),)


class LogSoftmaxByOpset(OpRun):
    op_domain = ""

    def _run(self, x, axis=None):
        ax = _softmax_axes(self, x.ndim)
        z = x - x.max(axis=ax, keepdims=True)
        return ((z - np.log(np.exp(z).sum(axis=ax, keepdims=True))).astype(x.dtype),)


SoftmaxByOpset.__name__ = "Softmax"
LogSoftmaxByOpset.__name__ = "LogSoftmax"


def _pool_windows(x_shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    """Per spatial axis: (output size, pad_begin, pad_end, span) as the ONNX spec and onnxruntime define
    them; with ceil_mode a window that would start in the end padding is dropped (as in PyTorch)."""
    nd = len(kernel_shape)
    s, d = list(strides or [1] * nd), list(dilations or [1] * nd)
    pads = list(pads or [0] * (2 * nd))
    auto = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    geo = []
    for i in range(nd):
        size, span = x_shape[2 + i], (kernel_shape[i] - 1) * d[i] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s[i])
            total = (out - 1) * s[i] + span - size  # may be negative when kernel < stride
            pb = int(total / 2) if auto == "SAME_UPPER" else int((total + 1) / 2)  # C division, as onnxruntime
            geo.append((out, pb, total - pb, span))
            continue
        pb, pe = (0, 0) if auto == "VALID" else (pads[i], pads[nd + i])
        room = size + pb + pe - span
        out = (-(-room // s[i]) if ceil_mode else room // s[i]) + 1
        if ceil_mode and (out - 1) * s[i] >= size + pb:
            out -= 1
        geo.append((out, pb, pe, span))
    return geo, s, d


def _window_taps(x_shape, kernel_shape, geo, s, d):
    """For every output position: the input coordinates of its taps (raster order) and which lie in x,
    which in x or its pads."""
    nd = len(kernel_shape)
    for o in np.ndindex(*[g[0] for g in geo]):
        taps = []
        for j in np.ndindex(*kernel_shape):
            t = tuple(o[i] * s[i] - geo[i][1] + j[i] * d[i] for i in range(nd))
            real = all(0 <= t[i] < x_shape[2 + i] for i in range(nd))
            padded = all(-geo[i][1] <= t[i] < x_shape[2 + i] + geo[i][2] for i in range(nd))
            taps.append((t, real, padded))
        yield o, taps


class MaxPoolByDefinition(OpRun):
    """MaxPool from the spec, with its Indices output: the first maximum of each window in raster
    order, flat over N x C x spatial (column-major spatial with storage_order=1). onnx.reference
    gets Indices wrong at stride 1 and SAME_LOWER pads."""

    op_domain = ""

    def _run(
        self,
        x,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        kernel_shape=None,
        pads=None,
        storage_order=None,
        strides=None,
    ):
        geo, s, d = _pool_windows(x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
        out = x.shape[:2] + tuple(g[0] for g in geo)
        y, ind = np.zeros(out, dtype=x.dtype), np.zeros(out, dtype=np.int64)
        spatial = x.shape[2:]
        base = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2]) * int(np.prod(spatial))
        for o, taps in _window_taps(x.shape, kernel_shape, geo, s, d):
            real = [t for t, r, _ in taps if r]
            vals = np.stack([x[(slice(None), slice(None)) + t] for t in real], axis=-1)
            first = np.argmax(vals, axis=-1)
            y[(slice(None), slice(None)) + o] = np.take_along_axis(vals, first[..., None], -1)[..., 0]
            order = "F" if storage_order else "C"
            flat = np.array([np.ravel_multi_index(t, spatial, order=order) for t in real])
            ind[(slice(None), slice(None)) + o] = base + flat[first]
        return (y, ind) if len(self.onnx_node.output) > 1 else (y,)


MaxPoolByDefinition.__name__ = "MaxPool"


class AveragePoolByDefinition(OpRun):
    """AveragePool from the spec: the divisor counts the window's taps inside x
    (count_include_pad=0) or inside x and its pads (1); ceil_mode windows are cut at the end pad,
    as in onnxruntime and PyTorch. onnx.reference reads 2-D pads in the wrong order and keeps
    windows that start in the end padding."""

    op_domain = ""

    def _run(
        self,
        x,
        auto_pad=None,
        ceil_mode=None,
        count_include_pad=None,
        dilations=None,
        kernel_shape=None,
        pads=None,
        strides=None,
    ):
        geo, s, d = _pool_windows(x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
        y = np.zeros(x.shape[:2] + tuple(g[0] for g in geo), dtype=x.dtype)
        for o, taps in _window_taps(x.shape, kernel_shape, geo, s, d):
            real = [t for t, r, _ in taps if r]
            count = sum(p for _, _, p in taps) if count_include_pad else len(real)
            total = sum(x[(slice(None), slice(None)) + t] for t in real)
            y[(slice(None), slice(None)) + o] = total / count
        return (y,)


AveragePoolByDefinition.__name__ = "AveragePool"


class GlobalMaxPoolByDefinition(OpRun):
    """GlobalMaxPool: the max over all spatial axes (onnx.reference's own drops the channel axis of a
    3-D input)."""

    op_domain = ""

    def _run(self, x):
        return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)


GlobalMaxPoolByDefinition.__name__ = "GlobalMaxPool"


class LpPoolByDefinition(OpRun):
    """LpPool from the spec: (sum of |x|^p over the window's taps inside x)^(1/p), with the windows of
    MaxPool/AveragePool (onnx.reference's own misplaces ceil_mode windows)."""

    op_domain = ""

    def _run(
        self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None, p=None, pads=None, strides=None
    ):
        p = 2 if p is None else p
        geo, s, d = _pool_windows(x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
        y = np.zeros(x.shape[:2] + tuple(g[0] for g in geo), dtype=x.dtype)
        for o, taps in _window_taps(x.shape, kernel_shape, geo, s, d):
            total = sum(np.abs(x[(slice(None), slice(None)) + t]) ** p for t, real, _ in taps if real)
            y[(slice(None), slice(None)) + o] = total ** (1.0 / p)
        return (y,)


LpPoolByDefinition.__name__ = "LpPool"


class BatchNormalizationByDefinition(OpRun):
    """BatchNormalization: running statistics unless training_mode=1 (opset 14+), which normalises with
    the batch's own (biased) statistics. onnx.reference runs opset 9-13 in a training mode."""

    op_domain = ""

    def _run(
        self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None, spatial=None, is_test=None
    ):
        eps = 1e-5 if epsilon is None else epsilon
        axes = tuple(a for a in range(x.ndim) if a != 1)
        shape = [-1] + [1] * (x.ndim - 2)
        if training_mode:
            m, v = x.mean(axis=axes), x.var(axis=axes)
            mom = 0.9 if momentum is None else momentum
            y = scale.reshape(shape) * (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + eps) + bias.reshape(shape)
            return (
                y.astype(x.dtype),
                (mean * mom + m * (1 - mom)).astype(x.dtype),
                (var * mom + v * (1 - mom)).astype(x.dtype),
            )[: len(self.onnx_node.output)]
        y = scale.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) + bias.reshape(shape)
        return (y.astype(x.dtype),)


BatchNormalizationByDefinition.__name__ = "BatchNormalization"


class LRNByDefinition(OpRun):
    """LRN over the channel axis of a tensor of any rank (onnx.reference's own sums over the wrong axis)."""

    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        alpha, beta, bias = (
            (1e-4 if alpha is None else alpha),
            (0.75 if beta is None else beta),
            (1.0 if bias is None else bias),
        )
        lo, hi = (size - 1) // 2, size // 2
        sq = np.zeros_like(x)
        for c in range(x.shape[1]):
            sq[:, c] = (x[:, max(0, c - lo) : c + hi + 1] ** 2).sum(axis=1)
        return ((x / (bias + alpha / size * sq) ** beta).astype(x.dtype),)


LRNByDefinition.__name__ = "LRN"


class MeanVarianceNormalizationByDefinition(OpRun):
    """MeanVarianceNormalization's function body, in the input's precision (onnx.reference expands it with
    float32 constants)."""

    op_domain = ""

    def _run(self, x, axes=None):
        axes = tuple(axes if axes is not None else (0, 2, 3))
        m = x.mean(axis=axes, keepdims=True)
        std = np.sqrt((x**2).mean(axis=axes, keepdims=True) - m**2)
        return (((x - m) / (std + 1e-9)).astype(x.dtype),)


MeanVarianceNormalizationByDefinition.__name__ = "MeanVarianceNormalization"


class GroupNormalizationByDefinition(OpRun):
    """GroupNormalization (opset 21: per-channel scale and bias) in the input's precision
    (onnx.reference expands the function, which computes in float32 by stash_type)."""

    op_domain = ""

    def _run(self, x, scale, bias, epsilon=None, num_groups=None, stash_type=None):
        eps = 1e-5 if epsilon is None else epsilon
        xg = x.reshape(x.shape[0], num_groups, -1)
        xh = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)
        shape = [-1] + [1] * (x.ndim - 2)
        return ((xh.reshape(x.shape) * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype),)


GroupNormalizationByDefinition.__name__ = "GroupNormalization"


class GatherElementsByDefinition(OpRun):
    """GatherElements as np.take_along_axis (onnx.reference's own fails on axes longer than 64)."""

    op_domain = ""

    def _run(self, data, indices, axis=None):
        axis = 0 if axis is None else axis
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        return (np.take_along_axis(data, indices, axis=axis),)


GatherElementsByDefinition.__name__ = "GatherElements"


class MaxUnpoolByDefinition(OpRun):
    """MaxUnpool: zeros of output_shape (else the shape inferred from the kernel), y.flat[I] = x.
    onnx.reference scatters into the inferred shape even when output_shape is larger."""

    op_domain = ""

    def _run(self, x, indices, output_shape=None, kernel_shape=None, pads=None, strides=None):
        nd = x.ndim - 2
        s, pads = list(strides or [1] * nd), list(pads or [0] * (2 * nd))
        if output_shape is None:
            output_shape = list(x.shape[:2]) + [
                (x.shape[2 + i] - 1) * s[i] - pads[i] - pads[nd + i] + kernel_shape[i] for i in range(nd)
            ]
        y = np.zeros(int(np.prod(output_shape)), dtype=x.dtype)
        y[indices.ravel()] = x.ravel()
        return (y.reshape([int(v) for v in output_shape]),)


MaxUnpoolByDefinition.__name__ = "MaxUnpool"


class ResizeByDefinition(_ReferenceResize):
    """Resize with coordinate_transformation_mode "tf_half_pixel_for_nn" (opsets 11-13), which
    onnx.reference lacks, from the spec: nearest mode only, x_original = (x_resized + 0.5) / scale
    per axis, rounded per nearest_mode and clamped to the input. Other modes: onnx.reference."""

    def _run(
        self,
        X,
        roi=None,
        scales=None,
        sizes=None,
        coordinate_transformation_mode=None,
        mode=None,
        nearest_mode=None,
        **kw,
    ):
        if coordinate_transformation_mode not in ("tf_half_pixel_for_nn", b"tf_half_pixel_for_nn"):
            return super()._run(
                X,
                roi,
                scales,
                sizes,
                coordinate_transformation_mode=coordinate_transformation_mode,
                mode=mode,
                nearest_mode=nearest_mode,
                **kw,
            )
        if mode not in ("nearest", b"nearest", None):
            raise NotImplementedError("tf_half_pixel_for_nn is only defined for nearest resizing here")
        roundings = {
            "round_prefer_floor": lambda v: math.ceil(v - 0.5),
            "round_prefer_ceil": lambda v: math.floor(v + 0.5),
            "floor": math.floor,
            "ceil": math.ceil,
        }
        rounding = roundings[nearest_mode or "round_prefer_floor"]
        y = X
        for axis, n_in in enumerate(X.shape):
            if sizes is not None and len(sizes):
                n_out = int(sizes[axis])
                scale = np.float32(n_out) / np.float32(n_in)
            else:
                scale = np.float32(scales[axis])
                n_out = int(math.floor(n_in * float(scale)))
            src = [
                min(max(rounding(float((np.float32(o) + np.float32(0.5)) / scale)), 0), n_in - 1) for o in range(n_out)
            ]
            y = np.take(y, np.array(src, dtype=np.int64), axis=axis)
        return (y,)


ResizeByDefinition.__name__ = "Resize"


class LoopByDefinition(_ReferenceLoop):
    """Loop from the spec: run the body while ``cond`` holds and the iteration count is below M;
    scan outputs are the per-iteration values stacked on a new axis 0 (onnx.reference's own
    concatenates them with np.vstack)."""

    def _run(self, M, cond, *v_initial, context=None, body=None, attributes=None, bindings=None):
        names_in, names_out = self.body.input_names, self.body.output_names
        n = len(v_initial)
        state = list(v_initial)
        scans = [[] for _ in range(len(names_out) - 1 - n)]
        it = 0
        keep_going = True if cond is None else bool(cond)
        while keep_going and (M is None or it < int(M)):
            feeds = dict(context or {})
            feeds[names_in[0]] = np.array(it, dtype=np.int64)
            feeds[names_in[1]] = np.array(keep_going)
            feeds.update(zip(names_in[2:], state))
            out = self._run_body(feeds, attributes=attributes, bindings=bindings)
            keep_going, state = bool(out[0]), list(out[1 : 1 + n])
            for k, value in enumerate(out[1 + n :]):
                scans[k].append(value)
            it += 1
        stacked = [np.stack(values) if values else np.empty((0,)) for values in scans]
        return tuple(state + stacked)


LoopByDefinition.__name__ = "Loop"


class ScanByDefinition(_ReferenceScan):
    """Scan from the spec, with any scan_input/output axes and directions (onnx.reference's own
    supports only axis 0, forward)."""

    def __init__(self, onnx_node, run_params):  # skip the parent's refusal of axes and directions
        OpRun.__init__(self, onnx_node, run_params)
        self.input_names, self.output_names = self.body.input_names, self.body.output_names

    def _run(
        self,
        *args,
        context=None,
        body=None,
        num_scan_inputs=None,
        scan_input_axes=None,
        scan_input_directions=None,
        scan_output_axes=None,
        scan_output_directions=None,
        attributes=None,
        bindings=None,
    ):
        n_state = len(args) - num_scan_inputs
        states, seqs = list(args[:n_state]), args[n_state:]
        in_axes = [a % s.ndim for a, s in zip(scan_input_axes or [0] * len(seqs), seqs)]
        in_dirs = scan_input_directions or [0] * len(seqs)
        steps = seqs[0].shape[in_axes[0]]
        n_out = len(self.output_names) - n_state
        results = [[] for _ in range(n_out)]
        for t in range(steps):
            feeds = dict(context or {})
            feeds.update(zip(self.input_names[:n_state], states))
            for name, seq, axis, d in zip(self.input_names[n_state:], seqs, in_axes, in_dirs):
                feeds[name] = np.take(seq, steps - 1 - t if d else t, axis=axis)
            out = self._run_body(feeds, bindings=bindings)
            states = list(out[:n_state])
            for k, value in enumerate(out[n_state:]):
                results[k].append(value)
        out_axes = scan_output_axes or [0] * n_out
        out_dirs = scan_output_directions or [0] * n_out
        stacked = []
        for values, axis, d in zip(results, out_axes, out_dirs):
            values = values[::-1] if d else values
            stacked.append(np.stack(values, axis=axis % (values[0].ndim + 1)))
        return tuple(states + stacked)


ScanByDefinition.__name__ = "Scan"


def run_ref(model: onnx.ModelProto, feeds: dict) -> dict:
    ref = ReferenceEvaluator(
        model,
        new_ops=[
            ConvTransposeByDefinition,
            ErfFloat64,
            GeluByDefinition,
            SoftmaxByOpset,
            LogSoftmaxByOpset,
            MaxPoolByDefinition,
            AveragePoolByDefinition,
            GlobalMaxPoolByDefinition,
            ResizeByDefinition,
            LpPoolByDefinition,
            BatchNormalizationByDefinition,
            LRNByDefinition,
            MeanVarianceNormalizationByDefinition,
            GroupNormalizationByDefinition,
            GatherElementsByDefinition,
            MaxUnpoolByDefinition,
            LSTMByDefinition,
            GRUByDefinition,
            RNNByDefinition,
            LoopByDefinition,
            ScanByDefinition,
        ],
    )
    unknown = set(feeds) - {i.name for i in model.graph.input}
    assert not unknown, f"feeds {sorted(unknown)} are not inputs of the graph (onnx.reference would ignore them)"
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ref.run(None, feeds)))


def gradient_graph(model, wrt: str, output: str, method="gradient", **kw) -> onnx.ModelProto:
    opts = onnxplain.Options(input=wrt, output=output, probabilities=True, target_mode="weights", **kw)
    return onnxplain.build(model, method, opts)


@dataclass
class VjpCheck:
    error: float  # relative L2 error of directional derivatives, float64 graph vs finite differences
    error_f32: float  # relative L2 error of the float32 graph in onnxruntime vs the float64 graph
    grad: np.ndarray


def check_vjp(
    model: onnx.ModelProto,
    feeds: dict,
    wrt: str,
    output: str | None = None,
    directions: int = 6,
    h: float = 1e-5,
    seed: int = 0,
    ort: bool = True,
) -> VjpCheck:
    """Check the gradient graph of ``output`` w.r.t. input ``wrt`` against finite differences."""
    rng = np.random.default_rng(seed)
    m64 = to_float64(model)
    output = output or model.graph.output[0].name
    f64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    y = run_ref(m64, f64)[output]
    w = rng.normal(size=y.shape)
    g64 = run_ref(gradient_graph(m64, wrt, output), {**f64, "target_weights": w})["attribution"]

    def F(x):
        return float(np.sum(w * run_ref(m64, {**f64, wrt: x})[output]))

    x = f64[wrt]
    us = [rng.normal(size=x.shape) for _ in range(directions)]
    fd = np.array([(F(x + h * u) - F(x - h * u)) / (2 * h) for u in us])
    an = np.array([np.sum(g64 * u) for u in us])
    err = float(np.linalg.norm(an - fd) / max(np.linalg.norm(fd), 1e-12))
    err32 = float("nan")
    if ort:
        g32 = make_session(gradient_graph(model, wrt, output)).run(
            ["attribution"], {**feeds, "target_weights": w.astype(np.float32)}
        )[0]
        err32 = float(np.linalg.norm(g32 - g64) / max(np.linalg.norm(g64), 1e-12))
    return VjpCheck(err, err32, g64)


class X:
    """Marks an argument of :func:`case` as a differentiable graph input."""

    def __init__(self, value):
        self.value = np.asarray(value, dtype=np.float32)


@dataclass
class Case:
    op: str
    model: onnx.ModelProto
    feeds: dict
    wrt: list
    output: str = "y0"
    id: str = ""
    tol: float = 1e-6
    ort: bool = True
    extra: dict = field(default_factory=dict)

    def __repr__(self):
        return self.id


def case(
    op: str,
    *args,
    opset: int = 17,
    outputs: int = 1,
    output: int = 0,
    id: str = "",
    tol: float = 1e-6,
    ort: bool = True,
    domain: str = "",
    dims: dict | None = None,
    **attrs,
) -> Case:
    """A one-node model ``op(*args)``; ``X(...)`` args are graph inputs, others initializers, None empty.

    ``dims={"x0": ["N", 3]}`` declares input ``x0`` with that (possibly symbolic) shape.
    """
    dims = dims or {}
    names, inputs, inits, feeds = [], [], [], {}
    for i, a in enumerate(args):
        if a is None:
            names.append("")
        elif isinstance(a, X):
            names.append(f"x{i}")
            inputs.append(helper.make_tensor_value_info(f"x{i}", F32, dims.get(f"x{i}", list(a.value.shape))))
            feeds[f"x{i}"] = a.value
        else:
            arr = np.asarray(a)
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            names.append(f"c{i}")
            inits.append(numpy_helper.from_array(arr, f"c{i}"))
    outs = [f"y{k}" for k in range(outputs)]
    node = helper.make_node(op, names, outs, domain=domain or None, **attrs)
    graph = helper.make_graph(
        [node], f"{op}_case", inputs, [helper.make_tensor_value_info(o, F32, None) for o in outs], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return Case(op, model, feeds, [n for n in feeds], outs[output], id or f"{op}-opset{opset}", tol, ort)


def assert_case(c: Case):
    for wrt in c.wrt:
        res = check_vjp(c.model, c.feeds, wrt, c.output, ort=c.ort)
        assert res.error <= c.tol, f"{c.id} d/d{wrt}: finite-difference error {res.error:.2e} > {c.tol:.0e}"
        if c.ort:
            assert res.error_f32 <= 1e-4, f"{c.id} d/d{wrt}: float32 onnxruntime error {res.error_f32:.2e}"
