"""Black-box methods (occlusion, RISE, LIME, KernelSHAP) on the bench ResNet-18: forward passes per second
inside each method ÷ raw batched onnxruntime forward throughput; which methods meet the ≥ 0.9 target.

    python bench/bench_blackbox.py [--repeats 3] [--quick] [--profile] [--model resnet18|resnet18-112|demo]

Model: ResNet-18 at 224x224 (``resnet18-112``: at 112x112); ``--quick``: the 64x64 demo CNN and 2
rounds, where Python overhead shows most as its forward pass is cheap. Input: one smooth random image
(Gaussian-filtered noise, so that SLIC finds its ~50 superpixels; plain noise gives a handful).

- Occlusion: window 32, stride 16 (13 x 13 = 169 occluded passes, plus the plain pass); on other
  sizes window size/7, stride half that.
- RISE: ``--n-masks`` masks (7 x 7 cells).
- LIME and KernelSHAP: ``--samples`` perturbations (default: each method's own, 1000 and 2048),
  SLIC superpixels, blur fill.

Each method runs through ``Explainer.explain`` with its default batch size (``--method-batch`` to
change it). The rows each one sends to onnxruntime are counted on the driver during a warm-up call,
so the pass counts are measured, not computed. "raw" runs batches of ``--batch-size`` distinct images
through a plain session of the model, as many as make about the median method's number of passes.
All are interleaved round-robin (as bench_gradient.interleaved) so that machine noise hits all alike.
Prints the load average, medians, passes per second, the ratios and whether each meets the target;
also the ratio of the best rounds (the least disturbed by other load: LIME and KernelSHAP calls last
seconds and meet other phases of a concurrent job than the short ones do).

``--profile``: instead of timing, each method runs under cProfile (after a warm-up, for at least 2 s
of calls) and the bench prints the share of its time spent inside onnxruntime's ``run`` and the
heaviest functions outside it. That share is robust to other load on the machine; the timing ratios
are not.
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(1, str(pathlib.Path(__file__).parent.parent))  # this checkout's onnxplain, not an installed one
import archs  # noqa: E402
from bench_gradient import machine, rounds  # noqa: E402

from onnxplain.runtime.driver import for_explainer  # noqa: E402
from onnxplain.runtime.explainer import Explainer  # noqa: E402
from onnxplain.runtime.session import make_session  # noqa: E402

TARGET = 0.9  # issue 15: black-box methods at >= 0.9 of the batched forward throughput
METHODS = ("occlusion", "rise", "lime", "kernelshap")


def smooth_image(size: int, seed: int = 0) -> np.ndarray:
    """[1, 3, size, size] float32 in [0, 1]: Gaussian-filtered noise (blobs of about size/16 pixels)."""
    from scipy.ndimage import gaussian_filter

    a = np.random.default_rng(seed).standard_normal((3, size, size))
    a = gaussian_filter(a, (0, size / 16, size / 16), mode="wrap")
    a = (a - a.min()) / (a.max() - a.min())
    return a[None].astype(np.float32)


def load_model(name: str):
    """(model, image size, title) of a bench model."""
    if name == "demo":
        import onnx

        from onnxplain.io.resources import demo_model

        return onnx.load(str(demo_model())), 64, "demo CNN 64x64"
    size = 112 if name == "resnet18-112" else 224
    return archs.resnet18(size=size), size, f"ResNet-18 {size}x{size}"


def method_options(args, size: int) -> dict:
    win = size // 7  # 224: window 32, stride 16 (13 x 13 windows); 64: window 9, stride 4 (15 x 15)
    win, stride = win, win // 2
    opts = {
        "occlusion": dict(window=win, stride=stride),
        "rise": dict(n_masks=args.n_masks, seed=0),
        "lime": dict(seed=0),
        "kernelshap": dict(seed=0),
    }
    for m in ("lime", "kernelshap"):
        if args.samples is not None:
            opts[m]["samples"] = args.samples
    if args.method_batch is not None:
        for o in opts.values():
            o["batch_size"] = args.method_batch
    return opts


class RowCounter:
    """Counts the rows and calls the Explainer's black-box driver sends to onnxruntime."""

    def __init__(self, drv):
        self.rows, self.calls, self.largest = 0, 0, 0
        run = drv._run

        def counted(sess, xs):
            self.rows += len(xs)
            self.calls += 1
            self.largest = max(self.largest, len(xs))
            return run(sess, xs)

        drv._run = counted

    def reset(self):
        self.rows, self.calls, self.largest = 0, 0, 0


def in_onnxruntime(stats: pstats.Stats) -> float:
    """Seconds spent inside onnxruntime's C++ ``run`` (the pybind method) in a profile."""
    return sum(v[2] for k, v in stats.stats.items() if k[2].startswith("<built-in method") and "pybind11" in k[2])


def profile(ex, x, opts, seconds: float = 2.0):
    """Each method under cProfile, called (after a warm-up) until ``seconds`` of profile have passed."""
    print(f"\nshare of time inside onnxruntime's run (cProfile, >= {seconds:g} s of calls, after a warm-up)")
    for m in METHODS:
        ex.explain(x, m, **opts[m])  # warm-up: sessions, arena, segmentation imports
        pr = cProfile.Profile()
        calls, t0 = 0, time.perf_counter()
        while calls < 1 or time.perf_counter() - t0 < seconds:
            pr.enable()
            ex.explain(x, m, **opts[m])
            pr.disable()
            calls += 1
        st = pstats.Stats(pr)
        ort = in_onnxruntime(st)
        share = ort / st.total_tt
        print(f"\n{m}: {calls} calls, {st.total_tt:.2f} s profiled, {ort:.2f} s in onnxruntime = {share:.3f}")
        rows = sorted(
            ((v[2], k) for k, v in st.stats.items() if not ("pybind11" in k[2] and k[2].startswith("<built-in"))),
            reverse=True,
        )[:6]
        for t, (file, line, fn) in rows:
            where = fn if file == "~" else f"{pathlib.Path(file).name}:{line}({fn})"
            print(f"    {t:7.3f} s  {t / st.total_tt:6.1%}  {where}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; --quick: 2)")
    p.add_argument("--quick", action="store_true", help="smoke test: the 64x64 demo CNN, 2 rounds")
    p.add_argument("--model", choices=("resnet18", "resnet18-112", "demo"), default=None, help="default resnet18")
    p.add_argument("--n-masks", type=int, default=256, help="RISE masks")
    p.add_argument("--samples", type=int, default=None, help="LIME/KernelSHAP samples (default: theirs)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per call of the raw reference")
    p.add_argument("--method-batch", type=int, default=None, help="batch_size= of the methods (default: theirs)")
    p.add_argument("--profile", action="store_true", help="cProfile each method instead of timing")
    args = p.parse_args()
    args.model = args.model or ("demo" if args.quick else "resnet18")
    args.repeats = args.repeats or (2 if args.quick else 3)
    print(machine())
    with open("/proc/loadavg") as fh:
        print(f"load average at start: {fh.read().strip()}")
    model, size, title = load_model(args.model)
    x = smooth_image(size)
    ex = Explainer(model)
    opts = method_options(args, size)
    counter = RowCounter(for_explainer(ex))
    if args.profile:
        profile(ex, x, opts)
        return
    passes, batches = {}, {}
    for m in METHODS:  # counted warm-up call
        counter.reset()
        ex.explain(x, m, **opts[m])
        passes[m], batches[m] = counter.rows, counter.largest
    xs = np.random.default_rng(0).random((args.batch_size, 3, size, size), dtype=np.float32)
    raw = make_session(model)
    name = model.graph.input[0].name
    calls = max(1, round(float(np.median(list(passes.values()))) / args.batch_size))  # about a method's rows

    def raw_forward():
        for _ in range(calls):
            raw.run(None, {name: xs})

    fns = {"raw": raw_forward}
    fns.update({m: (lambda m=m: ex.explain(x, m, **opts[m])) for m in METHODS})
    times = rounds(fns, args.repeats)
    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    with open("/proc/loadavg") as fh:
        print(f"load average at end: {fh.read().strip()}")
    base = calls * args.batch_size / med["raw"]
    base_best = calls * args.batch_size / best["raw"]
    print(f"\n{title}; medians of {args.repeats} interleaved rounds after a warm-up")
    print(f"raw forward, {calls} x batch {args.batch_size}: {med['raw']:.3f} s = {base:.1f} passes/s")
    head = f"{'method':<12}{'options':<34}{'passes':>7}{'batch':>7}{'time':>9}{'passes/s':>10}{'ratio':>7}"
    print(f"{head}{'best':>7}  ratio >= {TARGET}")
    for m in METHODS:
        rate = passes[m] / med[m]
        o = ", ".join(f"{k}={v}" for k, v in opts[m].items() if k != "batch_size")
        ok = "yes" if rate / base >= TARGET else "NO"
        r_best = passes[m] / best[m] / base_best
        row = f"{m:<12}{o:<34}{passes[m]:>7}{batches[m]:>7}{med[m]:>8.2f}s{rate:>10.1f}"
        print(f"{row}{rate / base:>7.3f}{r_best:>7.3f}  {ok}")


if __name__ == "__main__":
    main()
