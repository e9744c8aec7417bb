"""``onnxplain demo``: the shipped shapes classifier explained by every white-box method family.

Images come from :func:`onnxplain.io.shapes_data.make_shapes` with a fixed seed, so every run shows the
same pictures. The target explained is each image's ground-truth class, and the localisation
number is the fraction of *positive* attribution mass (after summing over channels) that lies
inside the ground-truth mask; a map spread uniformly over the image would score the mask's
area fraction, which the table prints for reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxplain.io import render
from onnxplain.methods.catalog import method

METHODS = ("gradient", "saliency", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop",
           "deconvnet", "lrp_epsilon_plus", "deeplift", "gradcam", "hirescam")
SEED = 2024


def mask_mass(attribution_hw: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of positive attribution mass inside ``mask`` (NaN when there is none)."""
    pos = np.clip(np.asarray(attribution_hw, dtype=np.float64), 0, None)
    total = pos.sum()
    return float((pos * np.asarray(mask, dtype=bool)).sum() / total) if total > 0 else float("nan")


def to_uint8_hwc(image_chw: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.transpose(image_chw, (1, 2, 0)) * 255), 0, 255).astype(np.uint8)


@dataclass
class DemoResult:
    labels: np.ndarray
    predicted: np.ndarray
    mask_area: float
    seconds_per_image: dict = field(default_factory=dict)
    mask_mass: dict = field(default_factory=dict)
    files: list = field(default_factory=list)


def run_demo(out_dir, n: int = 6, seed: int = SEED, methods=METHODS, steps: int = 32, samples: int = 16,
             model=None, progress=None) -> DemoResult:
    """Explain ``n`` generated images with each method; writes the grid and the arrays."""
    from onnxplain.io.shapes_data import CLASS_NAMES, make_shapes
    from onnxplain.errors import OnnxplainError
    from onnxplain.runtime.explainer import Explainer
    from onnxplain.io.resources import demo_model

    if n < 1:
        raise OnnxplainError("--n must be at least 1")
    path = Path(model) if model is not None else demo_model()
    ex = Explainer(str(path))
    shape = ex.x.shape
    size = shape[-1] if shape and isinstance(shape[-1], int) and shape[-1] > 0 else 64
    images, labels, masks = make_shapes(n, seed=seed, size=size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = progress or (lambda *a, **k: None)

    result = DemoResult(labels=labels, predicted=np.full(n, -1), mask_area=float(masks.mean()))
    maps = {}
    for m in methods:
        step(description=f"{m}: building graph")
        kw = method(m).takes({"steps": steps, "samples": samples})
        ex.run(images[:1], m, target=labels[:1], **kw)  # graph + session, untimed
        attr, outs = [], []
        t0 = time.perf_counter()
        for i in range(n):
            step(description=f"{m}: image {i + 1}/{n}")
            res = ex.run(images[i:i + 1], m, target=labels[i:i + 1], **kw)
            attr.append(res.attribution)
            outs.append(res.outputs)
            step(advance=1)
        result.seconds_per_image[m] = (time.perf_counter() - t0) / n
        a = np.concatenate(attr)
        render.save_npy(a, out / f"demo_{m}.npy")
        result.files.append(out / f"demo_{m}.npy")
        maps[m] = [render.to_2d(a[i], channel_axis=0) for i in range(n)]
        result.mask_mass[m] = float(np.nanmean([mask_mass(maps[m][i], masks[i]) for i in range(n)]))
        if result.predicted[0] < 0:
            name = ex.canonical.output(None).name
            logits = np.concatenate([o[name] for o in outs])
            result.predicted = logits.reshape(n, -1).argmax(axis=1)

    rows, row_titles = [], []
    for i in range(n):
        img = to_uint8_hwc(images[i])
        cells = [render.outline(img, masks[i], color=(0, 230, 0))]
        for m in methods:
            cells.append(render.overlay(img, maps[m][i], signed=render.is_signed(m)))
        rows.append(cells)
        truth = CLASS_NAMES[labels[i]] if labels[i] < len(CLASS_NAMES) else str(labels[i])
        pred = int(result.predicted[i])
        guess = CLASS_NAMES[pred] if 0 <= pred < len(CLASS_NAMES) else str(pred)
        row_titles.append(truth if pred == labels[i] else f"{truth} (pred {guess})")
    bars = (["signed"] if any(render.is_signed(m) for m in methods) else []) + \
        (["positive"] if any(not render.is_signed(m) for m in methods) else [])
    picture = render.grid(rows, titles=["image + mask", *methods], row_titles=row_titles, colorbars=bars,
                          note="target: the true class; colour scale: 99.5th percentile of |a| per map")
    render.save_png(picture, out / "demo_methods.png")
    result.files.insert(0, out / "demo_methods.png")
    return result


def format_table(r: DemoResult) -> str:
    lines = [f"{'method':<22} {'ms/image':>9} {'mask mass (+)':>14}"]
    for m, t in r.seconds_per_image.items():
        lines.append(f"{m:<22} {t * 1000:>9.1f} {r.mask_mass[m]:>14.2f}")
    lines.append(f"(mask covers {r.mask_area:.2f} of the image on average: a map spread uniformly scores about that)")
    return "\n".join(lines)
