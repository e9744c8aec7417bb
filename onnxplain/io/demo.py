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

METHODS = (
    "gradient",
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "deconvnet",
    "lrp_epsilon_plus",
    "deeplift",
    "gradcam",
    "hirescam",
)
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


def run_demo(
    out_dir,
    n: int = 6,
    seed: int = SEED,
    methods=METHODS,
    steps: int = 32,
    samples: int = 16,
    model=None,
    progress=None,
    device: str = "auto",
    providers=None,
) -> DemoResult:
    """Explain ``n`` generated images with each method; writes the grid and the arrays."""
    from onnxplain.errors import OnnxplainError
    from onnxplain.io.resources import demo_model
    from onnxplain.io.shapes_data import CLASS_NAMES, make_shapes
    from onnxplain.runtime.explainer import Explainer

    if n < 1:
        raise OnnxplainError("--n must be at least 1")
    path = Path(model) if model is not None else demo_model()
    ex = Explainer(str(path), device=device, providers=providers)
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
            res = ex.run(images[i : i + 1], m, target=labels[i : i + 1], **kw)
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
    bars = [None] + [(render.is_signed(m), None, render.for_display(m, maps[m][0])[2] or "0 = none") for m in methods]
    picture = render.grid(
        rows,
        titles=["image + mask", *methods],
        row_titles=row_titles,
        column_bars=bars,
        note="target: the true class; colour scale: 99.5th percentile of |a| per map",
    )
    render.save_png(picture, out / "demo_methods.png")
    result.files.insert(0, out / "demo_methods.png")
    return result


def format_table(r: DemoResult) -> str:
    lines = [f"{'method':<22} {'ms/image':>9} {'mask mass (+)':>14}"]
    for m, t in r.seconds_per_image.items():
        lines.append(f"{m:<22} {t * 1000:>9.1f} {r.mask_mass[m]:>14.2f}")
    lines.append(f"(mask covers {r.mask_area:.2f} of the image on average: a map spread uniformly scores about that)")
    return "\n".join(lines)


# ---- detection and segmentation demos --------------------------------------------------------------
DET_MODEL = ("models", "demo", "shapes_det.onnx")
SEG_MODEL = ("models", "demo", "shapes_seg.onnx")
TASK_METHODS = ("gradient", "input_x_gradient", "gradcam", "occlusion", "rise", "d_rise")
TASK_OPTIONS = {
    "occlusion": {"window": 8, "stride": 4},
    "rise": {"n_masks": 500, "cells": 8},
    "d_rise": {"n_masks": 500, "cells": 8},
}


def head_layer(explainer) -> str:
    """The input of the model's last Conv: the feature map a dense or grid head reads (Grad-CAM's layer)."""
    convs = [n for n in explainer.canonical.graph.nodes if n.op == "Conv"]
    return convs[-1].inputs[0].name


def localisation(a_hw: np.ndarray, mask: np.ndarray, offset: bool) -> tuple[float, float]:
    """(pointing game hit, relevance mass) of one map against a mask; an ``offset`` map (RISE, D-RISE:
    positive everywhere around an uninformative mean) has its mean removed for the mass."""
    from onnxplain.evaluation.metrics.localisation import pointing_game, relevance_mass

    a = np.asarray(a_hw, dtype=np.float64)
    mass = relevance_mass((a - a.mean() if offset else a)[None], mask[None])[0]
    return float(pointing_game(a[None], mask[None])[0]), float(mass)


@dataclass
class TaskResult:
    task: str
    objects: int
    mask_area: float
    pointing: dict = field(default_factory=dict)
    mass: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def run_task_demo(
    out_dir,
    task: str,
    n: int = 4,
    seed: int = SEED,
    methods=None,
    model=None,
    progress=None,
    options=None,
    picture_rows: int = 6,
    device: str = "auto",
    providers=None,
) -> TaskResult:
    """Explain every ground-truth object of ``n`` generated scenes (:func:`make_scenes`) with the shipped
    detector (``task="detect"``: the detection best matching the object's box) or segmenter (``"segment"``:
    the object's class map summed over its mask). Scores each map against the object (its box for
    detection, its mask for segmentation) by pointing game and relevance mass; writes
    ``demo_<task>.png`` (explained box yellow, other detections faint; region outlined green)."""
    from onnxplain import targets as tg
    from onnxplain.errors import OnnxplainError
    from onnxplain.io.resources import demo_model
    from onnxplain.io.shapes_data import CLASS_NAMES, make_scenes
    from onnxplain.runtime.explainer import Explainer

    if task not in ("detect", "segment"):
        raise OnnxplainError(f"the demo task must be detect or segment, not '{task}'")
    methods = tuple(methods or (TASK_METHODS if task == "detect" else TASK_METHODS[:-1]))
    options = {**TASK_OPTIONS, **(options or {})}
    path = Path(model) if model is not None else demo_model(DET_MODEL if task == "detect" else SEG_MODEL)
    ex = Explainer(str(path), device=device, providers=providers)
    ex.task = task
    images, labels, boxes, masks = make_scenes(n, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = progress or (lambda *a, **k: None)
    layer = head_layer(ex)
    res = TaskResult(task, int((labels >= 0).sum()), 0.0)
    hits = {m: [] for m in methods}
    mass = {m: [] for m in methods}
    secs = {m: 0.0 for m in methods}
    rows, titles, areas = [], [], []
    for i in range(n):
        for j in np.flatnonzero(labels[i] >= 0):
            x = images[i : i + 1]
            if task == "detect":
                spec = tg.Detection(box=tuple(boxes[i, j]), cls=int(labels[i, j]))
                truth = np.zeros(x.shape[-2:], bool)
                x1, y1, x2, y2 = boxes[i, j].astype(int)
                truth[y1:y2, x1:x2] = True
            else:
                spec = tg.Region(masks[i, j], cls=int(labels[i, j]) + 1)
                truth = masks[i, j]
            t = ex.target(x, spec)
            res.notes.append(f"scene {i} object {j} ({CLASS_NAMES[labels[i, j]]}): {t.notes[0]}")
            areas.append(truth.mean())
            item = dict(t.items[0])
            item["caption"] = None
            img = to_uint8_hwc(images[i])
            cells = [render.annotate(img, item)]
            for m in methods:
                step(description=f"{m}: scene {i + 1}/{n}")
                kw = {**options.get(m, {}), **({"layer": layer} if m == "gradcam" else {})}
                t0 = time.perf_counter()
                a = ex.run(x, m, target=t, **kw).attribution[0]
                secs[m] += time.perf_counter() - t0
                a2 = render.to_2d(a, channel_axis=0)
                h, ms = localisation(a2, truth, method(m).map == "offset")
                hits[m].append(h)
                mass[m].append(ms)
                if len(rows) < picture_rows:  # offset maps (RISE, D-RISE) drawn relative to their mean
                    shown, signed, _ = render.for_display(m, a2)
                    cells.append(render.annotate(render.overlay(img, shown, signed=signed), item))
                step(advance=1)
            if len(rows) < picture_rows:
                rows.append(cells)
                titles.append(f"{i}.{j} {CLASS_NAMES[labels[i, j]]}")
    k = max(1, res.objects)
    res.pointing = {m: float(np.nanmean(hits[m])) for m in methods}
    res.mass = {m: float(np.nanmean(mass[m])) for m in methods}
    res.seconds = {m: secs[m] / k for m in methods}
    res.mask_area = float(np.mean(areas)) if areas else 0.0
    what = (
        "the detection best matching each object's box (yellow; faint: other detections)"
        if task == "detect"
        else "each object's class map summed over its mask (green outline)"
    )
    bars = [None] + [
        (render.map_kind(m) != "non-negative", None, "0 = the map's mean" if render.map_kind(m) == "offset" else None)
        for m in methods
    ]
    pic = render.grid(
        rows,
        titles=["target", *methods],
        row_titles=titles,
        column_bars=bars,
        note=f"target: {what}; colour scale: 99.5th percentile of |a| per map; "
        "rise, d_rise: relative to their mean (blue below, red above)",
    )
    render.save_png(pic, out / f"demo_{task}.png")
    res.files.append(out / f"demo_{task}.png")
    return res


def format_task_table(r: TaskResult) -> str:
    truth = "box" if r.task == "detect" else "mask"
    lines = [f"{'method':<18} {'s/object':>9} {'pointing game':>14} {'relevance mass':>15}"]
    for m in r.pointing:
        lines.append(f"{m:<18} {r.seconds[m]:>9.2f} {r.pointing[m]:>14.2f} {r.mass[m]:>15.2f}")
    lines.append(
        f"({r.objects} objects; the ground-truth {truth} covers {r.mask_area:.3f} of the image on average: "
        "a uniform map scores about that relevance mass)"
    )
    return "\n".join(lines)
