"""`onnxplain explain`: attribution maps for images or arrays, with overlays and a comparison grid."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from onnxplain.errors import OnnxplainError

from onnxplain.cli.app import app
from onnxplain.cli.common import (Progress, class_label, class_names, existing, method_settings, opt_class_axis,
                                  opt_device, opt_feed, opt_input, opt_output, opt_prob, opt_providers, parse_feeds,
                                  parse_methods, rules_file, running, session_options, status, with_method_options)
from onnxplain.io.outputs import Outputs
from onnxplain.validate import check_bytes, parse_bytes


@app.command()
@with_method_options()
def explain(
    model: Path = typer.Argument(..., help="The ONNX model.", show_default=False),
    images: list[Path] = typer.Argument(..., help="Images (PNG, JPEG, ...) or preprocessed .npy arrays.",
                                        show_default=False),
    method: list[str] = typer.Option(["gradient"], "--method", "-m",
                                     help="Attribution methods, comma-separated or repeated (several: a comparison "
                                          "grid is written too); any spelling or alias of the README's table."),
    target: Optional[int] = typer.Option(None, "--target", "-t", help="Class to explain (default: the predicted one; "
                                         "with --task detect: the best detection of that class)."),
    task: Optional[str] = typer.Option(None, "--task", help="classify, detect, segment or sequence: what the default "
                                       "target is (default: guessed from the outputs; `inspect` shows the guess)."),
    target_weights: Optional[Path] = typer.Option(None, "--target-weights", help="A .npy seed of the explained "
                                                  "output's shape: explain sum(w * output)."),
    box: Optional[str] = typer.Option(None, "--box", help="Explain the detection that best matches this box: "
                                      "x1,y1,x2,y2 in input-tensor pixels (with --class: of that class)."),
    klass: Optional[int] = typer.Option(None, "--class", help="The class of --box or --region (default: the "
                                        "predicted one)."),
    detector: str = typer.Option("yolov8", "--detector", help="Detector output layout: yolov8 [N,4+C,A], yolov5 "
                                 "[N,A,5+C], ssd (boxes + scores outputs), detr (logits + cxcywh boxes)."),
    coordinate: Optional[int] = typer.Option(None, "--coordinate", min=0, max=3, help="Explain one box number "
                                             "(0-3) of the detection instead of its score (ODAM)."),
    region: Optional[Path] = typer.Option(None, "--region", help="A mask image (non-zero = inside) or .npy: explain "
                                          "the sum of the --class map inside it (segmenters, dense maps)."),
    position: Optional[str] = typer.Option(None, "--position", help="Sequence outputs [N, T, V]: T[:TOKEN] explains "
                                           "one token at timestep T; cK the K-th character of the greedy CTC decode."),
    out_dir: Path = typer.Option(Path("out"), "--out-dir", "-d", help="Folder for the PNG and NPY files."),
    input: Optional[str] = opt_input(),
    output: Optional[str] = opt_output(),
    probabilities: bool = opt_prob(),
    class_axis: Optional[int] = opt_class_axis(),
    preset: str = typer.Option("raw01", "--preset", help="raw01 (p/255), imagenet, caffe (BGR, mean in 0-255), tf ([-1, 1])."),
    size: Optional[str] = typer.Option(None, "--size", help="Resize to H W (or one int for both); default: the model's."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean, subtracted after --scale (tensor channel order)."),
    std: Optional[str] = typer.Option(None, "--std", help="Per-channel std, divided after the mean."),
    feed: Optional[list[str]] = opt_feed(),
    layout: Optional[str] = typer.Option(None, "--layout", help="NCHW or NHWC (default: from the model input)."),
    bgr: Optional[bool] = typer.Option(None, "--bgr/--rgb", help="Channel order of the tensor (default: the preset's)."),
    scale: Optional[str] = typer.Option(None, "--scale", help="Pixel multiplier, e.g. 1/255 (default: the preset's)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Text file with one class name per line."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Items per onnxruntime call."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse runs whose tensors need more "
                                             "(e.g. 8G; default: half of this machine's memory)."),
    alpha: float = typer.Option(0.75, "--alpha", min=0.0, max=1.0, help="Heatmap opacity at full strength."),
    shared_scale: bool = typer.Option(False, "--shared-scale", help="One colour scale per grid row (all methods)."),
    device: str = opt_device(),
    providers: Optional[str] = opt_providers(),
    **method_options,
):
    """Explain images with one or more methods; writes <stem>.<method>.png (overlay) and .npy (raw)."""
    from onnxplain.io import preprocess, render
    from onnxplain.graph.builder import np_dtype
    from onnxplain.runtime.explainer import Explainer
    from onnxplain.graph.rewrite import class_axis_of
    from onnxplain.graph.describe import _dims, fmt_shape

    methods = parse_methods(method or ["gradient"])
    settings = method_settings(methods, method_options)
    for p in images:
        if p.suffix.lower() == ".npy":
            existing(p)
        else:
            existing(p, "image file")
    existing(model)
    if labels is not None:
        existing(labels, "labels file")
    budget = None if max_memory is None else parse_bytes(max_memory)
    recipe = preprocess.resolve(preset, scale=scale, mean=mean, std=std, bgr=bgr, layout=layout, size=size)

    for s in settings.values():
        if s.get("rules") is not None:
            s["rules"] = rules_file(Path(s["rules"]))
    out_dir = Path(out_dir)
    outputs = Outputs(models=[model], protect=[*images, labels, *(s.get("rules") for s in settings.values())])
    outputs.folder(out_dir, "--out-dir").check()  # before any work
    ex = Explainer(str(model), input=input, output=output, probabilities=probabilities, class_axis=class_axis,
                   feeds=parse_feeds(feed), max_memory=budget, **session_options(device, providers))
    tokens = ex.inner is not None and ex.entry_integer  # token ids / bytes, explained through their embedding
    shape = ex.entry_shape if ex.inner is not None else ex.x.shape
    has_images = any(p.suffix.lower() != ".npy" for p in images)
    try:
        recipe = preprocess.for_model(recipe, shape)
    except OnnxplainError:
        if has_images:
            raise
        recipe = None  # .npy only, not an image input: attributions are written, no overlays
    if recipe is not None and recipe.layout == "NHWC":
        ex.options = replace(ex.options, channel_axis=3)
    if recipe is not None and recipe.size is not None and has_images:
        h, w = recipe.size
        n_images = sum(p.suffix.lower() != ".npy" for p in images)
        check_bytes(h * w * 3 * (8 + 4 + 1) + n_images * h * w * (4 + 3), budget,
                    f"preprocessing {n_images} image(s) to {h}x{w}")
    items = preprocess.load_items(images, recipe, shape, dtype=np_dtype(ex.x) or np.float32, integer=tokens,
                                  max_memory=budget)
    if not items:
        raise OnnxplainError("nothing to explain: the inputs hold no items")
    for it in items:  # validate everything before the first run: nothing half-written on bad input
        ex.check_input(it.tensor[None])
    spec, weights_file = _target_spec(ex, task, target, target_weights, box, klass, detector, coordinate, region,
                                      position)
    if target is not None and spec is None and weights_file is None:
        ex.check_target(target, 1)
    unit = next((s["unit"] for s in settings.values() if s.get("unit") is not None), None)
    if unit is not None:
        from onnxplain.methods.featurevis import check_cli_unit

        check_cli_unit(ex, [m.name for m in methods], unit, target)
    entries = methods
    methods = [m.name for m in methods]

    for it in items:  # every file, checked before the first run
        cells = max(128 * 128, it.tensor.size)
        for m in methods:
            outputs.file(out_dir / f"{it.name}.{m}.npy", size=it.tensor.nbytes * (64 if tokens else 1) + 128)
            if tokens:
                outputs.file(out_dir / f"{it.name}.{m}.tokens.npy", size=it.tensor.size * 8 + 128)
            if it.display is not None:
                outputs.file(out_dir / f"{it.name}.{m}.png", size=it.display.nbytes + 1024)
        if len(methods) > 1 and it.display is not None:
            outputs.file(out_dir / "comparison.png", size=cells * 3 * (len(methods) + 1))
    outputs.check()

    names = class_names(ex.canonical.model, labels)
    out_t = ex.canonical.output(ex.options.output)
    cax = class_axis_of(out_t, ex.options) if out_t.shape is not None and len(out_t.shape) >= 2 else 1
    item_channel_axis = -1 if recipe is not None and recipe.layout == "NHWC" else 0

    results = {m: [None] * len(items) for m in methods}
    tokens_out = [[] for _ in items]  # per item: one line of per-token scores per method
    summary = [None] * len(items)
    groups, start = [], 0
    while start < len(items):  # consecutive runs of same-shaped items, at most batch_size long
        end = start + 1
        while end < len(items) and end - start < batch_size and items[end].tensor.shape == items[start].tensor.shape:
            end += 1
        groups.append((start, end))
        start = end
    written = []
    resolved = {}  # (start, end) -> the Target of that group, resolved once for every method
    for s, e in groups:
        x = np.stack([it.tensor for it in items[s:e]])
        w = None if weights_file is None else \
            (weights_file[s:e] if len(weights_file) == len(items) and len(items) > 1 else weights_file)
        with running("resolving the target"):
            resolved[(s, e)] = ex.target(x, spec if spec is not None else target, w)
    first = resolved[groups[0]] if groups else None
    with status("building explanation graphs"):
        for m in entries:
            if unit is None and m.exportable and first is not None:
                params = {k: settings[m.name][k] for k in ("layer", "prefix_tokens", "rules")
                          if settings[m.name].get(k) is not None}
                (first.explainer or ex).graph("gradient" if m.kind == "looped" else m.name, first.mode, **params)
    if first is not None and first.mode == "weights" and first.notes:
        guessed = "" if task else " (guessed from the outputs; --task overrides)"
        kind = type(first.spec).__name__.lower() if first.spec is not None else "weights"
        typer.echo(f"target: {kind}{guessed if kind in ('detection', 'region', 'sequence') and spec is None else ''}")
    with outputs:
        written = []
        with Progress(len(methods) * len(items), "explaining") as bar:
            for m in methods:
                for s, e in groups:
                    bar(description=f"{m}")
                    x = np.stack([it.tensor for it in items[s:e]])
                    tg = resolved[(s, e)]
                    with running(f"running {m}"):
                        res = ex.run(x, m, target=tg, batch_size=batch_size,
                                     progress=(lambda d, t, m=m: bar(description=f"{m} ({d}/{t} passes)")),
                                     **{k: v for k, v in settings[m].items() if k != "batch_size"})
                    for k, i in enumerate(range(s, e)):
                        a = res.attribution[k]
                        note = tg.notes[k] if tg.notes else "the target"
                        if not np.any(a):
                            raise OnnxplainError(f"{m} gives an all-zero map for {items[i].name} ({note}): the explained "
                                                 "score does not depend on the input there; nothing written for it -- "
                                                 "choose another target (--task, --box, --region, --position) or method")
                        results[m][i] = a
                        if "token_scores" in res.outputs:
                            scores = res.outputs["token_scores"][k]
                            tokens_out[i].append(f"{m}: " + " ".join(f"{j}:{v:+.3g}" for j, v in enumerate(scores)))
                            written.append(render.save_npy(scores, out_dir / f"{items[i].name}.{m}.tokens.npy"))
                        if summary[i] is None:
                            summary[i] = _prediction(res, k, out_t.name, cax) if tg.mode == "class" else (None, None, None)
                        written.append(render.save_npy(a, out_dir / f"{items[i].name}.{m}.npy"))
                        if items[i].display is not None:
                            a2 = render.to_2d(a, channel_axis=item_channel_axis)
                            pic = render.overlay(items[i].display, a2, signed=render.is_signed(m), alpha=alpha)
                            item = dict(tg.items[k]) if tg.items else None
                            if item is not None:
                                item["caption"] = f"{m}: {item.get('caption', '')}"
                            pic = render.annotate(pic, item, source_size=_hw(items[i].tensor, item_channel_axis))
                            written.append(render.save_png(pic, out_dir / f"{items[i].name}.{m}.png"))
                    bar(advance=e - s)

            if len(methods) > 1:
                shown = [i for i, it in enumerate(items) if it.display is not None][:32]
                if shown:
                    rows, row_titles = [], []
                    for i in shown:
                        maps = [render.to_2d(results[m][i], channel_axis=item_channel_axis) for m in methods]
                        common = render.shared_scale(maps) if shared_scale else None
                        rows.append([items[i].display] + [render.overlay(items[i].display, a2, signed=render.is_signed(m),
                                                                         alpha=alpha, scale=common)
                                                          for a2, m in zip(maps, methods)])
                        row_titles.append(items[i].name)
                    bars = (["signed"] if any(render.is_signed(m) for m in methods) else []) + \
                        (["positive"] if any(not render.is_signed(m) for m in methods) else [])
                    note = "colour scale: 99.5th percentile of |a|, " + ("shared across each row" if shared_scale else "per map")
                    pic = render.grid(rows, titles=["image", *methods], row_titles=row_titles, colorbars=bars, note=note)
                    written.append(render.save_png(pic, out_dir / "comparison.png"))
                    if len([it for it in items if it.display is not None]) > len(shown):
                        typer.echo(f"comparison grid shows the first {len(shown)} images")
    # one line per item: prediction, explained target, score
    w = max(len(it.source.name if it.source.suffix.lower() != ".npy" else it.name) for it in items)
    notes = {i: resolved[(s, e)].notes[i - s] for s, e in groups for i in range(s, e) if resolved[(s, e)].notes}
    for i, (it, s) in enumerate(zip(items, summary)):
        label = it.source.name if it.source.suffix.lower() != ".npy" else it.name
        pred, tgt, score = s
        if pred is None and tgt is None and i in notes:
            typer.echo(f"{label:<{w}}  target {notes[i]}")
            continue
        parts = [f"{label:<{w}}"]
        if pred is not None:
            parts.append(f"predicted {class_label(pred, names)}")
        parts.append(f"target {class_label(tgt, names) if tgt is not None else '(weights)'}")
        if score is not None:
            parts.append(f"score {out_t.name}[{tgt}] = {score:.4g}")
        typer.echo("  ".join(parts))
        for line in tokens_out[items.index(it)]:
            typer.echo(f"  token scores (position:score) {line}")

    if len(methods) > 1:
        shown = [i for i, it in enumerate(items) if it.display is not None][:32]
        if shown:
            rows, row_titles = [], []
            for i in shown:
                maps = [render.to_2d(results[m][i], channel_axis=item_channel_axis) for m in methods]
                common = render.shared_scale(maps) if shared_scale else None
                tg = next(resolved[(s, e)] for s, e in groups if s <= i < e)
                mark = {k: v for k, v in tg.items[i - groups_start(groups, i)].items() if k != "caption"} \
                    if tg.items else None
                hw = _hw(items[i].tensor, item_channel_axis)
                rows.append([render.annotate(items[i].display, mark, hw)] +
                            [render.annotate(render.overlay(items[i].display, a2, signed=render.is_signed(m),
                                                            alpha=alpha, scale=common), mark, hw)
                             for a2, m in zip(maps, methods)])
                row_titles.append(items[i].name)
            bars = (["signed"] if any(render.is_signed(m) for m in methods) else []) + \
                (["positive"] if any(not render.is_signed(m) for m in methods) else [])
            note = "colour scale: 99.5th percentile of |a|, " + ("shared across each row" if shared_scale else "per map")
            pic = render.grid(rows, titles=["image", *methods], row_titles=row_titles, colorbars=bars, note=note)
            written.append(render.save_png(pic, out_dir / "comparison.png"))
            if len([it for it in items if it.display is not None]) > len(shown):
                typer.echo(f"comparison grid shows the first {len(shown)} images")
    typer.echo(f"wrote {len(written)} files to {out_dir}/ (input {ex.entry} {fmt_shape(_dims(shape))}"
               + (f", explained through '{ex.inner}')" if ex.inner is not None else ")"))


def _prediction(res, k: int, out_name: str, cax: int):
    """(predicted class, explained target, score of the explained output at the target) for item k."""
    tgt = int(res.target[k]) if res.target is not None else None
    out = res.outputs.get(out_name)
    if out is None or out.ndim < 2:
        return None, tgt, None
    o = np.moveaxis(np.asarray(out[k:k + 1], dtype=np.float64), cax, 1)
    scores = o.reshape(o.shape[0], o.shape[1], -1).sum(axis=2)[0]
    pred = int(np.argmax(scores))
    score = float(scores[tgt]) if tgt is not None and 0 <= tgt < len(scores) else None
    return pred, tgt, score




def groups_start(groups, i: int) -> int:
    return next(s for s, e in groups if s <= i < e)


def _hw(tensor: np.ndarray, channel_axis: int) -> tuple[int, int]:
    """(H, W) of one item's tensor [C, H, W] (channel_axis 0) or [H, W, C] (-1)."""
    if tensor.ndim != 3:
        return tuple(tensor.shape[-2:])
    return tuple(tensor.shape[1:]) if channel_axis == 0 else tuple(tensor.shape[:2])


def _target_spec(ex, task, target, target_weights, box, klass, detector, coordinate, region, position):
    """The target object the target options name (None: a plain class or the task's default) and the
    --target-weights array; also sets the explainer's task."""
    from onnxplain import targets as tg

    if task is not None and task not in tg.TASKS:
        raise OnnxplainError(f"--task must be one of {', '.join(tg.TASKS)}, not '{task}'")
    if detector not in tg.PRESETS:
        raise OnnxplainError(f"--detector must be one of {', '.join(tg.PRESETS)}, not '{detector}'")
    ex.task, ex.layout = task, detector
    given = [n for n, v in (("--target", target), ("--target-weights", target_weights), ("--box", box),
                            ("--region", region), ("--position", position)) if v is not None]
    if len(given) > 1:
        raise OnnxplainError(f"give one target option, not {' and '.join(given)}")
    if klass is not None and target is not None:
        raise OnnxplainError("give --class (with --box or --region) or --target, not both")
    weights = None
    if target_weights is not None:
        existing(target_weights)
        try:
            weights = np.load(target_weights, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OnnxplainError(f"--target-weights {target_weights}: not a readable .npy array ({exc})") from None
        return None, weights
    if box is not None:
        try:
            b = tuple(float(v) for v in box.split(","))
        except ValueError:
            b = ()
        if len(b) != 4 or not (b[2] > b[0] and b[3] > b[1]):
            raise OnnxplainError(f"--box must be x1,y1,x2,y2 with x2 > x1 and y2 > y1, not '{box}'")
        return tg.Detection(box=b, cls=klass, layout=detector, coordinate=coordinate), None
    if region is not None:
        existing(region)
        if region.suffix.lower() == ".npy":
            mask = np.load(region, allow_pickle=False)
        else:
            from PIL import Image

            try:
                mask = np.asarray(Image.open(region).convert("L"))
            except OSError as exc:
                raise OnnxplainError(f"--region {region}: not a readable image ({exc})") from None
        return tg.Region(np.asarray(mask) != 0, cls=klass), None
    if position is not None:
        p = position.strip()
        try:
            if p.startswith("c"):
                return tg.Sequence(char=int(p[1:])), None
            t, _, tok = p.partition(":")
            return tg.Sequence(position=int(t), token=int(tok) if tok else None), None
        except ValueError:
            raise OnnxplainError(f"--position must be T, T:TOKEN or cK (the K-th decoded character), not "
                                 f"'{position}'") from None
    if klass is not None or coordinate is not None:
        if task == "detect" or coordinate is not None:
            return tg.Detection(cls=klass, layout=detector, coordinate=coordinate), None
        return tg.Class(klass), None
    return None, None
