"""Feature visualisation after Zeiler & Fergus (ECCV 2014): explain one unit of an inner layer.

Instead of a class score, the explained scalar is one channel (or one unit) of an inner tensor:

* ``unit=("layer", c)``: the sum of channel ``c`` (axis 1) of tensor ``layer`` over all its
  other positions (for a 2-D ``[N, F]`` tensor: feature ``c``);
* ``unit=("layer", c, y, x)``: the single activation ``layer[:, c, y, x]`` (more trailing indices
  for other ranks: ``("layer", c, i, j, ...)`` indexes axes 1, 2, ...).

The backward pass is any of the backward-rule methods: ``deconvnet`` (Zeiler & Fergus's
projection of the activation back to pixel space), ``guided_backprop`` or ``gradient``. It is
built as ``Options(output=layer, probabilities=True, target_mode="weights")`` with a one-hot
seed tensor (``target_weights``) on the layer's shape: any tensor of the canonical graph may be
named, not only graph outputs. The layer's shape comes from shape inference or, where it is not
static, from one forward pass with the layer as an extra output.

API: ``Explainer(model).explain(x, method="deconvnet", unit=("conv2", 5))``; CLI:
``onnxplain explain ... --method deconvnet --unit conv2:5`` (``LAYER:CHANNEL[:Y:X]``).
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError

METHODS = ("gradient", "deconvnet", "guided_backprop", "input_x_gradient", "saliency")


def parse_unit(text: str) -> tuple:
    """``LAYER:CHANNEL[:Y:X]`` -> (layer, channel[, y, x]); the layer name may itself contain ':'."""
    parts = text.split(":")
    idx = []
    while len(parts) > 1 and len(idx) < 3 and _is_int(parts[-1]):
        idx.insert(0, int(parts.pop()))
    if len(idx) == 2:  # LAYER:... :Y:X needs a channel too: the first popped belongs to the name
        parts.append(str(idx.pop(0)))
    layer = ":".join(parts)
    if not layer or len(idx) not in (1, 3):
        raise OnnxplainError(f"--unit must be LAYER:CHANNEL or LAYER:CHANNEL:Y:X, got '{text}'")
    return (layer, *idx)


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def check_unit(unit) -> tuple:
    if isinstance(unit, str):
        return parse_unit(unit)
    unit = tuple(unit)
    if len(unit) < 2 or not isinstance(unit[0], str) or not all(isinstance(i, (int, np.integer)) for i in unit[1:]):
        raise OnnxplainError(f"unit must be (layer, channel) or (layer, channel, y, x), got {unit!r}")
    return (unit[0], *(int(i) for i in unit[1:]))


def unit_weights(shape, unit: tuple, dtype=np.float32) -> np.ndarray:
    """The one-hot seed ([N, ...] = ``shape``) selecting ``unit`` in every batch item."""
    layer, *idx = unit
    if len(shape) < 2:
        raise OnnxplainError(f"layer '{layer}' has shape {list(shape)}: no channel axis to pick a unit from")
    if len(idx) > len(shape) - 1:
        raise OnnxplainError(f"unit {unit!r} has {len(idx)} indices but layer '{layer}' has shape {list(shape)}")
    for i, (k, d) in enumerate(zip(idx, shape[1:])):
        if not 0 <= k < d:
            raise OnnxplainError(
                f"unit index {k} out of range for axis {i + 1} of layer '{layer}' (shape {list(shape)})"
            )
    w = np.zeros(shape, dtype=dtype)
    w[(slice(None), *idx)] = 1
    return w


def _layer_shape(explainer, layer: str, x: np.ndarray):
    """The layer's shape for input ``x``: static shapes, else one forward pass exposing it."""
    t = explainer.canonical.tensor(layer)
    if t.shape is not None and all(isinstance(d, int) and d > 0 for d in t.shape[1:]):
        return (len(x), *t.shape[1:])
    sessions = explainer.__dict__.setdefault("_unit_probes", {})
    if layer not in sessions:
        from onnxplain.graph.canonicalize import canonicalize, export_graph
        from onnxplain.runtime.session import make_session

        can = canonicalize(explainer.canonical.model)
        v = can.tensor(layer)
        g = can.graph
        if v not in g.outputs:
            g.outputs.append(v)
        g.cleanup()
        sessions[layer] = make_session(export_graph(g, can.model), explainer.providers)
    sess = sessions[layer]
    step = explainer.fixed_batch or len(x)
    xs = x[:step] if len(x) >= step else np.concatenate([x, np.repeat(x[-1:], step - len(x), 0)])
    return (len(x), *sess.run([layer], {explainer.x.name: xs})[0].shape[1:])


def explain_unit(explainer, x: np.ndarray, method: str, unit, batch_size: int = 16, params: dict | None = None):
    """(attribution, outputs) for the unit ``unit`` of an inner layer, through ``method``'s rules."""
    from onnxplain.runtime.session import make_session

    if method not in METHODS:
        raise OnnxplainError(f"a unit can be explained with {', '.join(METHODS)}; not with '{method}'")
    unit = check_unit(unit)
    layer = unit[0]
    explainer.canonical.tensor(layer)  # a clear error for a wrong name
    shape = _layer_shape(explainer, layer, x)
    w = unit_weights(shape, unit, x.dtype)
    sessions = explainer.__dict__.setdefault("_unit_sessions", {})
    params = params or {}
    key = (method, layer, tuple(sorted(params.items())))
    if key not in sessions:
        graph = explainer.graph(method, "weights", output=layer, probabilities=True, **params)
        sessions[key] = make_session(graph, explainer.providers)
    sess = sessions[key]
    names = [o.name for o in sess.get_outputs()]
    step = explainer.fixed_batch or max(1, batch_size)
    parts = []
    for i in range(0, len(x), step):
        xs, ws = x[i : i + step], w[i : i + step]
        k = len(xs)
        if explainer.fixed_batch and k < step:
            xs = np.concatenate([xs, np.repeat(xs[-1:], step - k, 0)])
            ws = np.concatenate([ws, np.repeat(ws[-1:], step - k, 0)])
        parts.append([r[:k] for r in sess.run(names, {explainer.x.name: xs, "target_weights": ws})])
    res = {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}
    attribution = res.pop("attribution")
    res.pop("target_index", None)
    return attribution, res


def check_cli_unit(explainer, methods, text: str, target=None) -> tuple:
    """Validate ``--unit`` before anything runs; builds the unit graphs (errors surface here)."""
    unit = parse_unit(text) if isinstance(text, str) else text
    if target is not None:
        raise OnnxplainError("give either --unit or --target, not both")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise OnnxplainError(f"--unit works with {', '.join(METHODS)}; not with {', '.join(bad)}")
    explainer.canonical.tensor(unit[0])
    for m in methods:
        explainer.graph(m, "weights", output=unit[0], probabilities=True)
    return unit
