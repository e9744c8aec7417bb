"""Gradient-family methods.

* ``gradient`` — the raw, signed gradient (Simonyan et al. 2014, arXiv:1312.6034);
* ``saliency`` — max over channels of |gradient| (Simonyan et al. 2014);
* ``input_x_gradient`` — x * gradient (Shrikumar et al. 2016, arXiv:1605.01713);
* ``smoothgrad`` / ``smoothgrad_sq`` — mean of gradients (or their squares) at noisy copies
  x + N(0, sigma^2), sigma = noise * (max(x) - min(x)) (Smilkov et al. 2017, arXiv:1706.03825);
* ``integrated_gradients`` — (x - x') times the average gradient along the straight path from the
  baseline x', by the trapezoid rule over ``steps`` points from x' to x (Sundararajan et al. 2017,
  arXiv:1703.01365).

Heads build the method inside the graph. SmoothGrad and IG need a batch of copies per input, so
in the graph they need a dynamic batch axis; :func:`interpolate` and :func:`noisy` make the same
copies in numpy for the Python driver, which works for fixed-batch models too.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError, ShapeError


def gradient(ctx):
    return ctx.backward(), ctx.x.shape


def input_x_gradient(ctx):
    g = ctx.backward()
    x = ctx.x if ctx.fold is None else ctx.b.unsqueeze(ctx.x, [1])  # K targets: g is [N, K, ...]
    return ctx.b.Mul(x, g), ctx.x.shape


def saliency(ctx):
    b, ax = ctx.b, ctx.options.channel_axis
    shape = None if ctx.x.shape is None else [1 if i == ax % len(ctx.x.shape) else d for i, d in enumerate(ctx.x.shape)]
    g = ctx.backward()
    if ctx.fold is not None:  # K targets: g is [N, K, ...]
        ax = ax % len(ctx.x.shape) + (ax % len(ctx.x.shape) > 0)
    return b.reduce("ReduceMax", b.Abs(g), [ax], keepdims=True), shape


def _batch_of_copies(ctx, method):
    batch = ctx.x.shape[0] if ctx.x.shape else None
    if not isinstance(batch, str) and batch is not None and batch != -1:
        raise OnnxplainError(
            f"{method} inside the graph needs a dynamic batch axis, and input '{ctx.x.name}' has a "
            f"fixed batch of {batch}; use `onnxplain explain` or Explainer.explain, which loop"
        )
    if ctx.x.shape is None:
        raise ShapeError(f"{method} inside the graph needs the rank of input '{ctx.x.name}'")


def _copies_backward(ctx, copies, n, symbol: str = "onnxplain_copies"):
    """Run the forward graph on ``copies`` ([n*N, ...], their batch axis named ``symbol``) and return
    their gradients as [n, N, ...]."""
    b, x = ctx.b, ctx.x
    mapping, nodes = ctx.clone_forward({x.name: copies}, symbol)
    r = len(ctx.logits.shape)
    seed = b.Tile(ctx.seed, b.ints([n] + [1] * (r - 1)))
    g = ctx.backward(seed=seed, x=copies, logits=mapping[ctx.logits.name], nodes=nodes)
    return b.Reshape(g, b.Concat(b.ints([n, -1]), b.shape_of(x, 1), axis=0))


def integrated_gradients(ctx):
    _batch_of_copies(ctx, "integrated_gradients")
    b, x, steps = ctx.b, ctx.x, ctx.options.steps
    r = len(x.shape)
    baseline = ctx.add_input("baseline", x.dtype, [None] * r, default=np.zeros([1] * r))
    alphas, weights = ig_alphas(steps)
    diff = b.Sub(x, baseline)
    # the last point (alpha = 1) is x itself: its gradient comes through the model's own forward pass
    total = b.Mul(ctx.backward(), b.const(weights[-1], like=x))
    for lo in range(0, steps - 1, ctx.options.chunk):  # the others in chunks: one batch of all the copies is
        k = min(ctx.options.chunk, steps - 1 - lo)  # memory-bound (bench/RESULTS.md)
        path = b.Add(baseline, b.Mul(b.const(alphas[lo : lo + k].reshape([k] + [1] * r), like=x), diff))
        flat = b.Reshape(path, b.Concat(b.ints([-1]), b.shape_of(x, 1), axis=0))
        grads = _copies_backward(ctx, flat, k, "onnxplain_copies" + (f"_{lo}" if lo else ""))
        weighted = b.Mul(grads, b.const(weights[lo : lo + k].reshape([k] + [1] * r), like=x))
        part = b.reduce("ReduceSum", weighted, [0], keepdims=False)
        total = b.Add(total, part)
    return b.Mul(diff, total), x.shape


def _smoothgrad(ctx, square):
    _batch_of_copies(ctx, "smoothgrad")
    b, x, o = ctx.b, ctx.x, ctx.options
    r = len(x.shape)
    axes = list(range(1, r))
    spread = b.Sub(b.reduce("ReduceMax", x, axes, keepdims=True), b.reduce("ReduceMin", x, axes, keepdims=True))
    sigma = b.Mul(spread, b.const(o.noise, like=x))
    reps = b.Expand(b.unsqueeze(x, [0]), b.Concat(b.ints([o.samples]), b.Shape(x), axis=0))
    noise = b.RandomNormalLike(reps, seed=float(o.seed))
    flat = b.Reshape(b.Add(reps, b.Mul(noise, sigma)), b.Concat(b.ints([-1]), b.shape_of(x, 1), axis=0))
    grads = _copies_backward(ctx, flat, o.samples)
    if square:
        grads = b.Mul(grads, grads)
    return b.reduce("ReduceMean", grads, [0], keepdims=False), x.shape


HEADS = {
    "gradient": gradient,
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": lambda ctx: _smoothgrad(ctx, False),
    "smoothgrad_sq": lambda ctx: _smoothgrad(ctx, True),
}


# ---- numpy copies for the Python driver -------------------------------------------------
def run_looped(explainer, x, target, opts, progress=None, *, method: str):
    """IG and SmoothGrad from Python: the gradient graph over copies of each item (fixed-batch models too).

    The target is resolved on ``x`` itself, then every copy explains that same target. IG's copies go
    ``chunk`` per onnxruntime call (at most ``batch_size``): one batch of all of them is memory-bound."""
    from onnxplain.runtime.result import Explanation

    bs, name = opts["batch_size"], explainer.x.name
    feeds = explainer.graph_feeds(x, target)
    first = explainer.run_graph("gradient", target.mode, feeds, batch_size=bs)
    if target.mode == "class":
        feeds["target"] = first.target
    n = len(x)
    per_call = min(bs, opts["chunk"]) if method == "integrated_gradients" else bs
    if method == "integrated_gradients":
        base = explainer.check_baseline(0.0 if opts["baseline"] is None else opts["baseline"], x)
        alphas, weights = ig_alphas(opts["steps"])  # alphas[-1] = 1: the pass at x above
        copies = [interpolate(x[i], base[i], alphas[:-1]) for i in range(n)]
    else:
        rng = np.random.default_rng(opts["seed"])
        copies = [noisy(x[i], opts["samples"], opts["noise"], rng) for i in range(n)]
    attribution = np.empty_like(x)
    for i, c in enumerate(copies):
        k = len(c)
        rep = {key: np.repeat(v[i : i + 1], k, axis=0) for key, v in feeds.items() if key != name}
        g = explainer.run_graph("gradient", target.mode, {name: c, **rep}, batch_size=per_call).attribution if k else c
        if method == "integrated_gradients":
            g = np.concatenate([g, first.attribution[i : i + 1]])
            attribution[i] = (x[i] - base[i]) * np.tensordot(weights, g, axes=1).astype(x.dtype)
        else:
            attribution[i] = (g * g if method == "smoothgrad_sq" else g).mean(axis=0)
        if progress is not None:
            progress(i + 1, n)
    return Explanation(attribution, first.target, first.outputs)


def ig_alphas(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid-rule points on [0, 1] and their weights (summing to 1); the last point is 1, x itself,
    so the gradient at x (needed anyway to resolve an arg-max target) is one of the ``steps`` passes."""
    if steps < 1:
        raise OnnxplainError(f"integrated_gradients needs steps >= 1, got {steps}")
    if steps == 1:
        return np.ones(1), np.ones(1)
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, steps), weights


def interpolate(x: np.ndarray, baseline: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """The IG path points for one item ``x`` ([...]) at ``alphas``: [len(alphas), ...]."""
    a = alphas.reshape([-1] + [1] * x.ndim).astype(x.dtype)
    return baseline + a * (x - baseline)


def noisy(x: np.ndarray, samples: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """SmoothGrad's noisy copies of one item: [samples, ...]."""
    sigma = noise * float(x.max() - x.min())
    return (x[None] + rng.normal(0.0, sigma, size=(samples,) + x.shape)).astype(x.dtype)
