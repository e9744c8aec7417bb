"""Checks of user-given values that several modules share: axes, run-time targets, memory.

Every check raises a one-line :class:`~onnxplain.errors.OnnxplainError`; nothing is wrapped,
clipped or guessed (an axis of 9 on a rank-2 output is an error, not axis 1).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from onnxplain.errors import OnnxplainError


def as_array(value, what: str) -> np.ndarray:
    """``np.asarray`` with a one-line error for ragged lists and objects that are not numbers."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise OnnxplainError(f"{what} is not a regular array ({' '.join(str(exc).split())[:120]})") from None
    if a.dtype == object or (a.dtype.kind in "USV" and a.dtype.name != "bfloat16"):  # ml_dtypes bfloat16 is "V"
        raise OnnxplainError(f"{what} must hold numbers, not {a.dtype}")
    return a


def class_axis(axis: int | None, rank: int, name: str = "the explained output") -> int:
    """The class axis of a rank-``rank`` output, in ``1 .. rank-1``: ``axis`` (negative counts from the
    end, as in numpy) or the default (1 for 4-D outputs, else the last). Axis 0 is the batch."""
    if axis is None:
        return 1 if rank == 4 else rank - 1
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise OnnxplainError(f"class_axis must be an integer, not {axis!r}")
    a = int(axis)
    if not -rank <= a < rank:
        raise OnnxplainError(
            f"class_axis {a} is out of range for {name} of rank {rank} (valid: 1..{rank - 1} or {-rank + 1}..-1)"
        )
    a %= rank
    if a == 0:
        raise OnnxplainError(f"class_axis {axis} is the batch axis of {name}; give the class axis (1..{rank - 1})")
    return a


def targets_in_range(classes, outputs: dict, name: str, axis: int | None) -> None:
    """After a run: the targets exist in the explained output as it came out (its class count was
    unknown before the run). ``classes`` int [N] (-1: arg-max), ``outputs`` name -> array."""
    if classes is None or name not in outputs:
        return
    y = np.asarray(outputs[name])
    if y.ndim < 2:
        return
    n = y.shape[class_axis(axis, y.ndim, f"output '{name}'")]
    t = np.asarray(classes)
    bad = t[(t >= n) | (t < -1)]
    if bad.size:
        raise OnnxplainError(
            f"target {int(bad[0])} out of range: output '{name}' has {n} classes at run time (use -1 for the arg-max)"
        )


# ---- memory ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or the cgroup limit when lower."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        total = 8 * 2**30
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def default_budget() -> int:
    """Half of the machine's memory (``ONNXPLAIN_MAX_MEMORY`` overrides it, in bytes or with K/M/G)."""
    env = os.environ.get("ONNXPLAIN_MAX_MEMORY")
    if env:
        try:
            return parse_bytes(env, "ONNXPLAIN_MAX_MEMORY")
        except OnnxplainError:
            pass
    return machine_memory() // 2


def parse_bytes(value, flag: str = "--max-memory") -> int:
    """``4G``, ``512M``, ``1e9``, ``2048K`` -> bytes (positive)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    else:
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        mult = 1
        if text[-1:] in ("K", "M", "G", "T"):
            mult = 1024 ** ("KMGT".index(text[-1]) + 1)
            text = text[:-1]
        try:
            v = float(text) * mult
        except ValueError:
            raise OnnxplainError(f"{flag} must be a size such as 4G, 512M or 1000000, not {value!r}") from None
        if not np.isfinite(v):
            raise OnnxplainError(f"{flag} must be finite, not {value!r}")
        n = int(v)
    if n <= 0:
        raise OnnxplainError(f"{flag} must be positive, not {value!r}")
    return n


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_bytes(need: int, budget: int | None, what: str) -> None:
    """Refuse ``need`` bytes above ``budget`` (None: the default budget)."""
    budget = default_budget() if budget is None else budget
    if need > budget:
        raise OnnxplainError(
            f"{what} needs about {human(need)}, above the memory limit of {human(budget)} "
            "(half of this machine's memory; raise it with --max-memory / max_memory=, or use a "
            "smaller --size / --batch-size)"
        )


def activations(graph, input_tensor, x_shape) -> tuple[int, int, str]:
    """(total bytes, largest bytes, largest tensor's name) of the activations of ``graph``
    (graphsurgeon) for an input of shape ``x_shape``: the input's symbolic dimensions take their
    run-time values; tensors with other unknown dimensions are not counted. The total is what a
    backward pass keeps (every forward activation), an upper bound for a forward pass."""
    subst = {}
    if input_tensor.shape is not None:
        for d, n in zip(input_tensor.shape, x_shape):
            if isinstance(d, str) and d:
                subst[d] = int(n)
    total = 0.0
    best, where = 0.0, input_tensor.name
    for t in graph.tensors().values():
        shape = getattr(t, "shape", None)
        if type(t).__name__ != "Variable" or shape is None:
            continue
        if t is input_tensor:
            shape = list(x_shape)
        dims = []
        for d in shape:
            d = subst.get(d, d) if isinstance(d, str) else d
            if not isinstance(d, (int, np.integer)) or d < 0:
                dims = None
                break
            dims.append(int(d))
        if dims is None:
            continue
        try:
            size = np.dtype(t.dtype).itemsize if t.dtype is not None else 4
        except TypeError:
            size = 4
        nbytes = float(np.prod(dims, dtype=np.float64)) * size
        total += nbytes
        if nbytes > best:
            best, where = nbytes, t.name
    cap = float(2**62)
    return int(min(total, cap)), int(min(best, cap)), where


def check_run_memory(explainer, x: np.ndarray, batch_size: int | None, budget: int | None = None) -> None:
    """Refuse a run whose activations (see :func:`activations`) for one onnxruntime call exceed the budget."""
    rows = len(x) if not batch_size else min(len(x), int(batch_size))
    fixed = explainer.fixed_batch
    rows = max(1, fixed or rows)
    shape = (rows, *x.shape[1:])
    # a walk over every tensor of the graph: once per input shape (the canonical graph does not change)
    cache = explainer.__dict__.setdefault("_activations", {})
    key = (id(explainer.canonical.graph), explainer.x.name, shape)
    if key not in cache:
        cache[key] = activations(explainer.canonical.graph, explainer.x, shape)
    total, largest, name = cache[key]
    budget = default_budget() if budget is None else budget
    if total > budget:
        raise OnnxplainError(
            f"the model's activations for a batch of {rows} of shape {list(x.shape[1:])} need about {human(total)} "
            f"(largest: '{name}', {human(largest)}), above the memory limit of {human(budget)}; use a smaller "
            "--batch-size / --size, or raise the limit with --max-memory (max_memory= in Python)"
        )
