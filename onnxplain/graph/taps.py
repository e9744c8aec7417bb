"""Graph taps: the inner layer that CAM methods read, and how to see it as a grid of maps.

:func:`find_tap` picks a layer of the canonical graph (by name, or the automatic choice) and
returns a :class:`Tap`: the tensor and, for a token map ``[N, T, D]`` of a vision transformer,
how to turn it into a grid ``[N, D, g_h, g_w]`` (prefix tokens such as the class token and
register tokens dropped). :func:`candidates` is the one implementation of the automatic choice;
``onnxplain inspect`` (:mod:`onnxplain.graph.describe`) shows the same list, so it shows exactly the
layer that the CAMs use.

The automatic choice:

* CNNs: the input of the model's head — the last node on the explained path that is a
  GlobalAveragePool/GlobalMaxPool, a ReduceMean/ReduceMax over the spatial axes, or a
  Flatten/Reshape to 2-D feeding a Gemm/MatMul — whose input is a 4-D map larger than 1x1;
* token models: with mean pooling over the tokens, the pooled token map; with a class token
  (the head reads one token), the class token's gradient reaches the other tokens only through
  attention, so the choice is the last normalisation output before the last attention Softmax
  (the input of the last block's attention, as is usual for ViT Grad-CAM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxplain.errors import OnnxplainError

POOLING_HEADS = ("GlobalAveragePool", "GlobalMaxPool")
SPATIAL_REDUCE = ("ReduceMean", "ReduceMax")
FLATTEN = ("Flatten", "Reshape")
DENSE = ("Gemm", "MatMul")
NORMALIZATION = (
    "LayerNormalization",
    "RMSNormalization",
    "SkipLayerNormalization",
    "GroupNormalization",
    "BatchNormalization",
    "InstanceNormalization",
)
MAX_CAM = 5
MAX_PREFIX = 8  # prefix tokens (class + register tokens) inferred from shapes without being told


@dataclass
class Tap:
    """The tapped tensor and how to read it as maps ``[N, C, h, w]``."""

    tensor: object  # the gs.Variable in the canonical graph
    kind: str  # "map" ([N, C, h, w]) or "tokens" ([N, T, D])
    prefix: int = 0  # tokens dropped at the front (class/register tokens)
    grid: tuple | None = None  # (h, w) of a token map
    producer: str = ""

    @property
    def name(self) -> str:
        return self.tensor.name

    def to_grid(self, b, t):
        """Emit nodes turning ``t`` (the tapped tensor or its cotangent) into ``[N, C, h, w]``."""
        if self.kind == "map":
            return t
        gh, gw = self.grid
        if self.prefix:
            t = b.slice(t, [self.prefix], [2**62], [1])
        t = b.transpose(t, [0, 2, 1])  # [N, D, g*g]
        return b.Reshape(t, b.ints([0, -1, gh, gw]))

    def grid_np(self, a: np.ndarray) -> np.ndarray:
        """The same in numpy (for tests and drivers)."""
        if self.kind == "map":
            return a
        gh, gw = self.grid
        a = a[:, self.prefix :]
        return a.transpose(0, 2, 1).reshape(a.shape[0], a.shape[2], gh, gw)


# ---- shapes ------------------------------------------------------------------------------------------
def _dims(shape) -> list | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?") for d in shape]


def _spatial_ok(shape) -> bool:
    """A 4-D map whose spatial size is not known to be 1x1."""
    if shape is None or len(shape) != 4:
        return False
    h, w = shape[2], shape[3]
    return not (isinstance(h, int) and isinstance(w, int) and h * w <= 1)


def _axes(node, r: int) -> list | None:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        v = getattr(node.inputs[1], "values", None)
        axes = None if v is None else np.asarray(v).ravel().tolist()
    return None if axes is None else [int(a) % r for a in axes]


def _is_head(node) -> bool:
    """A pooling/flatten head reading a 4-D map."""
    from onnxplain.graph.builder import is_float

    if not node.inputs or not is_float(node.inputs[0]):
        return False
    src = node.inputs[0]
    if src.shape is None or len(src.shape) != 4 or not _spatial_ok(src.shape):
        return False
    if node.op in POOLING_HEADS:
        return True
    if node.op in SPATIAL_REDUCE:
        axes = _axes(node, 4)
        return axes is not None and {2, 3} <= set(axes)
    if node.op in FLATTEN:  # flattened to [N, features] and fed to a dense layer
        out = node.outputs[0]
        flat = node.op == "Flatten" or (out.shape is not None and len(out.shape) == 2)
        return flat and any(c.op in DENSE for c in out.outputs)
    return False


def _token_head(node) -> str | None:
    """'class' for a node reading one token of [N, T, D] (Gather/Slice on axis 1), 'mean' for a
    mean/max over the token axis, else None."""
    from onnxplain.graph.builder import is_float

    if not node.inputs or not is_float(node.inputs[0]):
        return None
    src = node.inputs[0]
    if src.shape is None or len(src.shape) != 3:
        return None
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) % 3 == 1:
        idx = getattr(node.inputs[1], "values", None)
        if idx is not None and np.asarray(idx).size == 1:
            return "class"
    if node.op == "Slice" and len(node.inputs) >= 4:
        vals = [getattr(t, "values", None) for t in node.inputs[1:4]]
        if all(v is not None for v in vals):
            starts, ends, axes = (np.asarray(v).ravel().tolist() for v in vals)
            if [int(a) % 3 for a in axes] == [1] and ends[0] - starts[0] == 1:
                return "class"
    if node.op in SPATIAL_REDUCE:
        axes = _axes(node, 3)
        if axes == [1]:
            return "mean"
    return None


def _patch_grid(path, before: int):
    """(h, w) of the patch embedding: the last 4-D map on the path before the first token map
    (and before node index ``before``)."""
    grid = None
    for node in path[:before]:
        if any(t.shape is not None and len(t.shape) == 3 for t in node.outputs):
            break
        for t in node.outputs:
            if t.shape is not None and len(t.shape) == 4 and all(isinstance(d, int) for d in t.shape[2:]):
                grid = (t.shape[2], t.shape[3])
    return grid


def token_layout(tokens: int, x_shape, patch_grid=None, prefix_tokens: int | None = None, name: str = ""):
    """(prefix tokens, (g_h, g_w)) for a token map with ``tokens`` tokens, else raise."""
    what = f"token map '{name}' with {tokens} tokens" if name else f"token map with {tokens} tokens"
    hint = "pass --prefix-tokens K (Options.prefix_tokens) to say how many tokens precede the patch grid"
    if prefix_tokens is not None:
        rest = tokens - prefix_tokens
        if patch_grid is not None and patch_grid[0] * patch_grid[1] == rest:
            return prefix_tokens, tuple(patch_grid)
        g = math.isqrt(max(rest, 0))
        if rest <= 0 or g * g != rest:
            raise OnnxplainError(f"{what}: {tokens} - {prefix_tokens} prefix tokens is not a square grid")
        return prefix_tokens, (g, g)
    if patch_grid is not None:
        k = tokens - patch_grid[0] * patch_grid[1]
        if 0 <= k <= MAX_PREFIX:
            return k, tuple(patch_grid)
    hw = list(x_shape[2:4]) if x_shape is not None and len(x_shape) == 4 else []
    fits = []
    for k in range(min(MAX_PREFIX, tokens - 1) + 1):
        g = math.isqrt(tokens - k)
        if g * g != tokens - k or g < 2:
            continue
        if hw and all(isinstance(d, int) for d in hw) and any(d % g for d in hw):
            continue
        fits.append((k, (g, g)))
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise OnnxplainError(f"{what} does not split into prefix tokens and a square patch grid; {hint}")
    raise OnnxplainError(f"{what} is ambiguous ({' or '.join(f'{k} prefix + {g[0]}x{g[1]}' for k, g in fits)}); {hint}")


def _grid_fits(path, h: int) -> bool:
    """The token map read by head ``path[h]`` is prefix tokens plus a patch grid seen earlier."""
    grid = _patch_grid(path, h)
    tokens = path[h].inputs[0].shape[1]
    return (
        grid is not None
        and isinstance(tokens, int)
        and 0 <= tokens - grid[0] * grid[1] <= MAX_PREFIX
        and grid[0] * grid[1] > 1
    )


def _token_maps(path, upto: int):
    from onnxplain.graph.builder import is_float

    out = []
    for node in path[:upto]:
        for t in node.outputs:
            if is_float(t) and t.shape is not None and len(t.shape) == 3 and isinstance(t.shape[1], int):
                out.append((t, node))
    return out


# ---- the automatic choice ----------------------------------------------------------------------------
def candidates(path) -> list[dict]:
    """Candidate CAM layers on the explained ``path`` (up to 5, the default last), each a dict
    ``{"tensor", "shape", "producer", "default"}``; empty when the model has no head that
    CAMs understand."""
    from onnxplain.graph.builder import is_float

    heads = [i for i, n in enumerate(path) if _is_head(n)]
    tok_heads = [(i, k) for i, n in enumerate(path) if (k := _token_head(n))]
    if heads and (not tok_heads or heads[-1] > tok_heads[-1][0]):
        h = heads[-1]
        chosen = path[h].inputs[0]
        maps = [(t, node) for node in path[:h] for t in node.outputs if is_float(t) and _spatial_ok(t.shape)]
    elif tok_heads and _grid_fits(path, tok_heads[-1][0]):
        h, kind = tok_heads[-1]
        width = path[h].inputs[0].shape[2]
        maps = [(t, n) for t, n in _token_maps(path, h) if t.shape[1] == path[h].inputs[0].shape[1]]
        chosen = path[h].inputs[0]
        if kind == "class":
            soft = [i for i, n in enumerate(path[:h]) if n.op == "Softmax"]
            if soft:
                before = [(t, n) for t, n in _token_maps(path, soft[-1]) if t.shape[1] == chosen.shape[1]]
                normed = [(t, n) for t, n in before if n.op in NORMALIZATION]
                same = [(t, n) for t, n in before if t.shape[2] == width]
                pick = (normed or same or before or [(chosen, None)])[-1]
                chosen = pick[0]
                if pick in before:
                    maps = before[: before.index(pick) + 1]
    else:
        return []
    if not any(t.name == chosen.name for t, _ in maps):
        producer = next((n for n in path if chosen in n.outputs), None)
        maps.append((chosen, producer))
    rest = [m for m in maps if m[0].name != chosen.name][-(MAX_CAM - 1) :]
    maps = rest + [m for m in maps if m[0].name == chosen.name][:1]
    return [
        {
            "tensor": t.name,
            "shape": _dims(t.shape),
            "producer": f"{n.op} '{n.name}'" if n is not None else "graph input",
            "default": t.name == chosen.name,
        }
        for t, n in maps
    ]


def _resolve(can, x, logits):
    from onnxplain.graph.canonicalize import find_logits

    x = x if x is not None else can.input()
    logits = logits if logits is not None else find_logits(can.graph, can.output())[0]
    return x, logits


def find_tap(
    can, layer: str | None = None, prefix_tokens: int | None = None, *, x=None, logits=None, nodes=None
) -> Tap:
    """The layer CAMs read in the canonical graph ``can``: ``layer`` (a tensor or node name) or the
    automatic choice; token maps get their prefix tokens and patch grid (see :func:`token_layout`).

    ``x``/``logits`` default to the explained input and logits; ``nodes`` to the graph's nodes.
    """
    from onnxplain.graph.backward import explained_path
    from onnxplain.graph.builder import is_float

    x, logits = _resolve(can, x, logits)
    nodes = list(can.graph.nodes) if nodes is None else list(nodes)
    _, path = explained_path(nodes, [x.name], [logits.name])
    on_path = {t.name: (t, n) for n in path for t in n.outputs}
    if layer is None:
        cands = candidates(path)
        if not cands:
            raise OnnxplainError(
                "no CAM layer found automatically (no 4-D map or token map feeds a pooling, "
                "flatten or class-token head); name one with --layer (see `onnxplain inspect`)"
            )
        name = next(c["tensor"] for c in cands if c["default"])
        tensor, producer = on_path[name]
    else:
        if layer in on_path:
            tensor, producer = on_path[layer]
        else:
            by_node = [n for n in path if n.name == layer and n.outputs]
            if by_node:
                producer, tensor = by_node[0], by_node[0].outputs[0]
            elif layer in can.graph.tensors():
                raise OnnxplainError(
                    f"layer '{layer}' is not between input '{x.name}' and the explained output "
                    f"'{logits.name}'; choose a layer on that path (see `onnxplain inspect`)"
                )
            else:
                raise OnnxplainError(
                    f"no tensor or node named '{layer}' in the model (see `onnxplain inspect` for CAM candidate layers)"
                )
        if not is_float(tensor):
            raise OnnxplainError(f"layer '{layer}' is not a float tensor")
    shape = tensor.shape
    where = f"{producer.op} '{producer.name}'"
    if shape is not None and len(shape) == 4:
        return Tap(tensor, "map", producer=where)
    if shape is not None and len(shape) == 3:
        if not isinstance(shape[1], int):
            raise OnnxplainError(f"token map '{tensor.name}' has an unknown number of tokens ({shape[1]})")
        idx = path.index(producer)
        grid = _patch_grid(path, idx)
        k, g = token_layout(shape[1], x.shape, grid, prefix_tokens, tensor.name)
        return Tap(tensor, "tokens", prefix=k, grid=g, producer=where)
    raise OnnxplainError(
        f"layer '{tensor.name}' has shape {_dims(shape)}; CAMs need a 4-D map [N, C, h, w] or a token map [N, T, D]"
    )
