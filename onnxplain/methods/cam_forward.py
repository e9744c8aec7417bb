"""Forward-only CAMs, driven from Python through onnxruntime: Score-CAM and Ablation-CAM.

Neither needs a gradient. Both use one *tap graph*: the model with

* an extra input ``cam_mask`` ([N, C], one factor per channel of the tapped layer, multiplied
  into the tapped tensor before any consumer sees it; all ones = the model itself), and
* extra outputs ``cam_logits`` (the explained output: the logits under a final Softmax/Sigmoid,
  as for the other methods) and ``cam_activation`` (the tapped tensor, unmasked).

Every perturbed forward pass is one batch item of that single session; the passes are batched
(``batch_size`` items per run; exactly the model's batch when it is fixed, padding the last run).

**Score-CAM** (Wang et al., CVPR-W 2020). Each channel ``A_k`` of the layer is upsampled to the
input size (bilinear, half-pixel: ONNX ``Resize`` linear), min-max normalised to [0, 1] and
multiplied into the input; the masked input is scored. ``score="softmax"`` (default, as in the
paper and its code): the score is the softmax probability of the target, and the weights are
those scores, ``w_k = softmax(f(x * M_k))_c``. ``score="logit"``: the score is the raw logit and
the weights are a softmax over the channels of those logits (which keeps unbounded logits from
swamping the sum). Channels that are constant over the map have no normalised mask; as in the
paper's code they are skipped (weight 0). The baseline term of the paper (``- f(x_b)``) is not
subtracted (it is not in the authors' code either). Map: ``ReLU(sum_k w_k A_k)``.

**Ablation-CAM** (Ramaswamy & Desai, WACV 2020). ``w_k = (y_c - y_c^k) / y_c`` where ``y_c`` is
the target logit and ``y_c^k`` the same with channel ``k`` of the layer zeroed (in the graph:
row ``k`` of ``cam_mask`` is one everywhere except a zero at ``k``). Map: ``ReLU(sum_k w_k A_k)``.
The ablated passes only differ after the layer: when nothing after it reads a tensor from before
it, they run through the model's head alone (the layer's values from the plain pass as an input:
the same numbers, a fraction of the cost); else (a skip connection around the layer) whole
passes. ``y_c = 0`` gives weights 0.

Both return the layer-resolution map ``attribution_layer`` [N, 1, h, w] and its bilinear
upsampling to the input, ``attribution`` [N, 1, H, W]. With ``target_weights`` the score is
``sum(weights * y)`` over the explained output ``y`` (softmax'ed first for Score-CAM's default).
Nothing is random: no seeds are needed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from onnxplain.errors import OnnxplainError

METHODS = ("scorecam", "ablationcam")
MASK, LOGITS, ACT = "cam_mask", "cam_logits", "cam_activation"
_ORT_FLOATS = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


# ---- the tap graph --------------------------------------------------------------------------------
def tap_graph(model, options, layer: str | None = None, head_only: bool = False):
    """The model with ``cam_mask`` multiplied into ``layer`` and the extra outputs described above.

    ``layer`` None: the automatic choice of :func:`onnxplain.graph.taps.find_tap` (the map feeding the
    pooling/flatten head; for token models see there). Returns (onnx.ModelProto, Tap).

    ``head_only``: only the part of the model after the layer, with the layer itself as an input
    (named as the layer) beside ``cam_mask`` and ``cam_logits`` as the output; (None, Tap) when
    that part also reads tensors from before the layer (a skip connection around it). Ablation-CAM
    runs its C ablated passes through it: the same numbers as whole passes (the layer's values
    are those of the whole pass), at the cost of the head only.
    """
    import onnx_graphsurgeon as gs

    from onnxplain.graph.builder import Builder, np_dtype
    from onnxplain.graph.canonicalize import canonicalize, export_graph, find_logits

    can = canonicalize(model)
    g = can.graph
    x = can.input(options.input)
    out = can.output(options.output)
    logits = out if options.probabilities else find_logits(g, out)[0]
    from onnxplain.graph.taps import find_tap

    tap = find_tap(can, layer, getattr(options, "prefix_tokens", None), x=x, logits=logits)
    t = tap.tensor
    for n in (MASK, LOGITS, ACT):
        if n in g.tensors():
            raise OnnxplainError(f"the model already has a tensor named '{n}'; this name is reserved")
    b = Builder(g, can.opset)
    consumers = list(t.outputs)
    chan_axis = 1 if len(t.shape) == 4 else 2
    c = t.shape[chan_axis]
    batch = x.shape[0] if x.shape else "batch"
    mask = gs.Variable(MASK, dtype=np_dtype(t), shape=[batch, c if isinstance(c, int) else "cam_channels"])
    g.inputs.append(mask)
    m = b.unsqueeze(mask, [2, 3] if len(t.shape) == 4 else [1])
    masked = b.Mul(t, m)
    for node in consumers:
        node.inputs = [masked if i is t else i for i in node.inputs]
    outs = list(g.outputs)
    for src, dst in ((logits, LOGITS), (t, ACT)):
        o = b.Identity(src)
        o.name, o.dtype, o.shape = dst, np_dtype(src), src.shape
        outs.append(o)
    g.outputs = outs
    if head_only:
        t.inputs.clear()  # the layer becomes an input: everything before it goes
        g.inputs = [t, mask]
        g.outputs = [o for o in outs if o.name == LOGITS]
        g.cleanup()
        produced = {o.name for n in g.nodes for o in n.outputs}
        for node in g.nodes:
            for i in node.inputs:
                if isinstance(i, gs.Variable) and i.name and i.name not in produced and i not in g.inputs:
                    return None, tap
    g.cleanup()
    g.toposort()
    return export_graph(g, can.model), tap


# ---- numpy helpers --------------------------------------------------------------------------------
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights of 1-D linear interpolation, half-pixel centres, edges clamped."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def upsample(a: np.ndarray, size) -> np.ndarray:
    """Bilinear upsampling of [..., h, w] to [..., H, W] (ONNX Resize linear, half_pixel)."""
    h, w = a.shape[-2:]
    H, W = size
    mh, mw = _interp_matrix(H, h), _interp_matrix(W, w)
    return np.einsum("Hh,...hw,Ww->...HW", mh, a.astype(np.float64), mw).astype(a.dtype)


def softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def normalise(maps: np.ndarray):
    """Min-max normalise each [..., H, W] map to [0, 1]; also returns which maps are non-constant."""
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    ok = (hi > lo)[..., 0, 0]
    return np.where(hi > lo, (maps - lo) / np.where(hi > lo, hi - lo, 1), 0).astype(maps.dtype), ok


def cam_map(weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """ReLU(sum_k w_k A_k): [N, C] x [N, C, h, w] -> [N, 1, h, w]."""
    m = np.einsum("nc,nchw->nhw", weights.astype(np.float64), grid.astype(np.float64))
    return np.maximum(m, 0)[:, None].astype(grid.dtype)


# ---- the driver -----------------------------------------------------------------------------------
class ForwardCam:
    """One tap graph + session; run() computes Score-CAM or Ablation-CAM for a batch."""

    def __init__(self, explainer, layer: str | None = None, prefix_tokens: int | None = None):
        from dataclasses import replace

        from onnxplain.runtime.session import make_session

        options = (
            explainer.options if prefix_tokens is None else replace(explainer.options, prefix_tokens=prefix_tokens)
        )
        self.model, self.tap = tap_graph(explainer.canonical.model, options, layer)
        self.session = make_session(self.model, explainer.providers)
        self.names = [o.name for o in self.session.get_outputs()]
        self.x_name = explainer.x.name
        self.fixed = explainer.fixed_batch
        self.options = options
        self.channels = None
        self.head = None  # the head-only graph's session, built for Ablation-CAM when possible
        self._head_tried = False
        self._explainer = explainer
        self._layer = layer

    def head_session(self):
        if not self._head_tried:
            from onnxplain.runtime.session import make_session

            self._head_tried = True
            m, _ = tap_graph(self._explainer.canonical.model, self.options, self._layer, head_only=True)
            if m is not None:
                self.head = make_session(m, self._explainer.providers)
        return self.head

    def forward(self, x: np.ndarray, mask: np.ndarray, batch_size: int):
        """Run the tap graph on (x, mask) rows; returns a dict of concatenated outputs."""
        return self.forward_rows(lambda i, j: (x[i:j], mask[i:j]), len(x), batch_size)

    def forward_rows(self, rows, n: int, batch_size: int, progress=None, session=None, x_name=None):
        """Run the tap graph (or ``session``, fed ``x_name``) over ``n`` rows made chunk by chunk by
        ``rows(start, stop) -> (x, mask)`` (thousands of perturbed inputs never sit in memory at once)."""
        session = session or self.session
        names = [o.name for o in session.get_outputs()]
        x_name = x_name or self.x_name
        step = self.fixed or max(1, batch_size)
        # the mask has the tapped layer's type, which is float32 inside a float16 model (graph/precision.py)
        mask_type = next((_ORT_FLOATS.get(i.type) for i in session.get_inputs() if i.name == MASK), None)
        parts = []
        for i in range(0, n, step):
            xs, ms = rows(i, min(i + step, n))
            k = len(xs)
            if self.fixed and k < step:  # a fixed batch: pad with copies of the last row
                xs = np.concatenate([xs, np.repeat(xs[-1:], step - k, 0)])
                ms = np.concatenate([ms, np.repeat(ms[-1:], step - k, 0)])
            ms = np.ascontiguousarray(ms, dtype=mask_type)
            res = session.run(names, {x_name: np.ascontiguousarray(xs), MASK: ms})
            parts.append([r[:k] for r in res])
            if progress is not None:
                progress(min(i + step, n), n)
        if not parts:
            return {name: np.zeros((0,)) for name in names}
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}

    def channel_count(self, x):
        if self.channels is None:
            t = next(o for o in self.model.graph.output if o.name == ACT)
            dims = t.type.tensor_type.shape.dim
            ax = 1 if len(dims) == 4 else 2
            d = dims[ax]
            self.channels = d.dim_value if d.HasField("dim_value") else None
        return self.channels


def _class_axis(logits: np.ndarray, options) -> int:
    r = logits.ndim
    if r < 2:
        raise OnnxplainError("the explained output needs a batch axis for class targets; use target weights")
    from onnxplain.validate import class_axis

    return class_axis(options.class_axis, r)


def _seed(logits: np.ndarray, options, target, weights):
    """(seed of the explained output's per-item shape [N, ...], resolved targets or None)."""
    if weights is not None:
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), logits.shape)
        return w, None
    ax = _class_axis(logits, options)
    others = tuple(i for i in range(1, logits.ndim) if i != ax)
    scores = logits.sum(axis=others) if others else logits
    t = np.where(target < 0, scores.argmax(axis=1), target).astype(np.int64)
    onehot = np.zeros(scores.shape, dtype=np.float64)
    onehot[np.arange(len(t)), t] = 1
    shape = [1] * logits.ndim
    shape[0], shape[ax] = onehot.shape
    return np.broadcast_to(onehot.reshape(shape), logits.shape), t


def _score(y: np.ndarray, seed: np.ndarray, options, use_softmax: bool) -> np.ndarray:
    """The explained score of each row: sum(seed * y), y softmax'ed over the class axis if asked."""
    y = y.astype(np.float64)
    if use_softmax and not options.probabilities:
        y = softmax(y, _class_axis(y, options))
    return (seed * y).reshape(len(y), -1).sum(axis=1)


def explain(
    explainer,
    x: np.ndarray,
    method: str,
    target: np.ndarray | None,
    target_weights=None,
    *,
    layer: str | None = None,
    batch_size: int = 64,
    score: str = "softmax",
    progress=None,
    fast: bool = True,
    prefix_tokens: int | None = None,
):
    """Score-CAM / Ablation-CAM for ``x``; returns (attribution, layer map, targets, model outputs)."""
    if method not in METHODS:
        raise OnnxplainError(f"unknown forward CAM '{method}' (choose from: {', '.join(METHODS)})")
    if score not in ("softmax", "logit"):
        raise OnnxplainError(f"score must be 'softmax' or 'logit', not '{score}'")
    cams = explainer.__dict__.setdefault("_forward_cams", {})
    layer = layer if layer is not None else explainer.options.layer
    key = layer if prefix_tokens is None else (layer, prefix_tokens)
    if key not in cams:
        cams[key] = ForwardCam(explainer, layer, prefix_tokens)
    fc = cams[key]
    n = len(x)
    # the plain pass: activations, logits, targets
    c = fc.channel_count(x)
    ones = np.ones((n, c if c else 1), dtype=x.dtype)
    if c is None:  # unknown channel count: probe one item
        probe = fc.forward(x[:1], ones[:1], 1)
        c = fc.tap.grid_np(probe[ACT]).shape[1]
        ones = np.ones((n, c), dtype=x.dtype)
        fc.channels = c
    base = fc.forward(x, ones, batch_size)
    grid = fc.tap.grid_np(base[ACT])  # [N, C, h, w]
    y = base[LOGITS]
    seed, chosen = _seed(y, fc.options, target, target_weights)
    size = x.shape[-2:]
    weights = np.zeros((n, c), dtype=np.float64)
    # every perturbed pass is one row (item i, channel k); rows of different items share a batch
    head = None
    if method == "scorecam":
        live = grid.max(axis=(2, 3)) > grid.min(axis=(2, 3))  # constant channels have no mask: skipped
        items, chans = np.nonzero(live)

        def rows(j0, j1):
            it, ch = items[j0:j1], chans[j0:j1]
            masks, _ = normalise(upsample(grid[it, ch], size))  # [k, H, W], min-max normalised
            return (x[it] * masks[:, None]).astype(x.dtype), np.ones((len(it), c), dtype=x.dtype)
    else:
        items, chans = np.repeat(np.arange(n), c), np.tile(np.arange(c), n)
        head = fc.head_session() if fast else None
        src = base[ACT] if head is not None else x  # the head alone re-runs from the layer's values

        def rows(j0, j1):
            m = np.ones((j1 - j0, c), dtype=x.dtype)
            m[np.arange(j1 - j0), chans[j0:j1]] = 0
            return src[items[j0:j1]], m

    res = fc.forward_rows(
        rows, len(items), batch_size, progress, session=head, x_name=fc.tap.name if head is not None else None
    )
    if method == "scorecam":
        soft = score == "softmax" and y.shape[_class_axis(y, fc.options)] > 1  # a softmax over one class is 1
        s = _score(res[LOGITS], seed[items], fc.options, soft) if len(items) else np.zeros(0)
        if score == "logit":  # a softmax over each item's (live) channels
            for i in range(n):
                sel = items == i
                s[sel] = softmax(s[sel], 0) if sel.any() else s[sel]
        weights[items, chans] = s
    else:
        y0 = _score(y, seed, fc.options, False)
        yk = _score(res[LOGITS], seed[items], fc.options, False)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = (y0[items] - yk) / y0[items]
        weights[items, chans] = np.where(y0[items] != 0, w, 0.0)
    layer_map = cam_map(weights, grid)
    attribution = upsample(layer_map, size)
    outputs = {k: v for k, v in base.items() if k not in (LOGITS, ACT)}
    outputs["attribution_layer"] = layer_map
    return attribution, layer_map, chosen, outputs


def reference(
    model, x: np.ndarray, method: str, layer: str, target: int = -1, score: str = "softmax", probabilities: bool = False
) -> np.ndarray:
    """A slow, direct definition for tests: one onnxruntime run per perturbed input, unbatched.

    Returns the layer-resolution map [N, 1, h, w]."""
    from onnxplain.graph.rewrite import Options
    from onnxplain.runtime.session import make_session

    options = replace(Options(), probabilities=probabilities)
    m, tap = tap_graph(model, options, layer)
    sess = make_session(m)
    xname = next(i.name for i in m.graph.input if i.name != MASK)

    def run(xi, mask):
        a, y = sess.run([ACT, LOGITS], {xname: xi[None], MASK: mask[None]})
        return tap.grid_np(a)[0], y[0].astype(np.float64)

    out = []
    for xi in x:
        c = _channels(m)
        a, y = run(xi, np.ones(c, dtype=np.float32))
        t = int(np.argmax(y)) if target < 0 else target
        w, live = np.zeros(c), np.zeros(c, dtype=bool)
        for k in range(c):
            if method == "scorecam":
                if a[k].max() == a[k].min():
                    continue
                u = upsample(a[k], xi.shape[-2:])
                u = (u - u.min()) / (u.max() - u.min())
                live[k] = True
                _, yk = run((xi * u).astype(xi.dtype), np.ones(c, dtype=np.float32))
                p = np.exp(yk - yk.max()) / np.exp(yk - yk.max()).sum() if not probabilities else yk
                w[k] = p[t] if score == "softmax" else yk[t]
            else:
                mk = np.ones(c, dtype=np.float32)
                mk[k] = 0
                _, yk = run(xi, mk)
                w[k] = (y[t] - yk[t]) / y[t]
        if method == "scorecam" and score == "logit":
            w[live] = np.exp(w[live] - w[live].max()) / np.exp(w[live] - w[live].max()).sum()
        out.append(np.maximum(np.tensordot(w, a.astype(np.float64), axes=1), 0)[None])
    return np.stack(out).astype(x.dtype)


def _channels(m: onnx.ModelProto) -> int:
    t = next(i for i in m.graph.input if i.name == MASK)
    return t.type.tensor_type.shape.dim[1].dim_value
