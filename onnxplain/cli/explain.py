"""`onnxplain explain`: attribution maps for images or arrays, with overlays and a comparison grid."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import typer

from onnxplain.cli.app import app
from onnxplain.cli.common import (
    Progress,
    class_label,
    class_names,
    existing,
    method_settings,
    opt_class_axis,
    opt_device,
    opt_feed,
    opt_input,
    opt_output,
    opt_prob,
    opt_providers,
    parse_feeds,
    parse_methods,
    rules_file,
    running,
    session_options,
    status,
    with_method_options,
)
from onnxplain.errors import OnnxplainError
from onnxplain.io.outputs import Outputs
from onnxplain.validate import check_bytes, parse_bytes


@app.command()
@with_method_options()
def explain(
    model: Path = typer.Argument(..., help="The ONNX model.", show_default=False),
    images: list[Path] = typer.Argument(
        ...,
        help="Images (PNG, JPEG, ...) or preprocessed .npy arrays; folders and glob patterns ('photos/*.jpg') too.",
        show_default=False,
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Folders and '**' patterns: include subfolders."),
    method: list[str] = typer.Option(
        ["gradient"],
        "--method",
        "-m",
        help="Attribution methods, comma-separated or repeated (several: a comparison "
        "grid is written too); any spelling or alias of the README's table.",
    ),
    target: int | None = typer.Option(
        None,
        "--target",
        "-t",
        help="Class to explain (default: the predicted one; with --task detect: the best detection of that class).",
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help="classify, detect, segment or sequence: what the default "
        "target is (default: guessed from the outputs; `inspect` shows the guess).",
    ),
    target_weights: Path | None = typer.Option(
        None, "--target-weights", help="A .npy seed of the explained output's shape: explain sum(w * output)."
    ),
    box: str | None = typer.Option(
        None,
        "--box",
        help="Explain the detection that best matches this box: "
        "x1,y1,x2,y2 in input-tensor pixels (with --class: of that class).",
    ),
    klass: int | None = typer.Option(
        None, "--class", help="The class of --box or --region (default: the predicted one)."
    ),
    detector: str = typer.Option(
        "yolov8",
        "--detector",
        help="Detector output layout: yolov8 [N,4+C,A], yolov5 "
        "[N,A,5+C], ssd (boxes + scores outputs), detr (logits + cxcywh boxes).",
    ),
    coordinate: int | None = typer.Option(
        None,
        "--coordinate",
        min=0,
        max=3,
        help="Explain one box number (0-3) of the detection instead of its score (ODAM).",
    ),
    region: Path | None = typer.Option(
        None,
        "--region",
        help="A mask image (non-zero = inside) or .npy: explain "
        "the sum of the --class map inside it (segmenters, dense maps).",
    ),
    position: str | None = typer.Option(
        None,
        "--position",
        help="Sequence outputs [N, T, V]: T[:TOKEN] explains "
        "one token at timestep T; cK the K-th character of the greedy CTC decode.",
    ),
    out_dir: Path = typer.Option(Path("out"), "--out-dir", "-d", help="Folder for the PNG and NPY files."),
    input: str | None = opt_input(),
    output: str | None = opt_output(),
    probabilities: bool = opt_prob(),
    class_axis: int | None = opt_class_axis(),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="raw01 (p/255), imagenet, caffe (BGR, mean in 0-255), "
        "tf ([-1, 1]); default: the model's 'onnxplain.preprocess' metadata, else raw01.",
    ),
    resize: str | None = typer.Option(
        None,
        "--resize",
        help="crop (default: centre crop, aspect ratio kept), pad "
        "(letterbox) or stretch: how a photo of another shape meets the model's size.",
    ),
    size: str | None = typer.Option(None, "--size", help="Resize to H W (or one int for both); default: the model's."),
    mean: str | None = typer.Option(
        None, "--mean", help="Per-channel mean, subtracted after --scale (tensor channel order)."
    ),
    std: str | None = typer.Option(None, "--std", help="Per-channel std, divided after the mean."),
    feed: list[str] | None = opt_feed(),
    layout: str | None = typer.Option(None, "--layout", help="NCHW or NHWC (default: from the model input)."),
    bgr: bool | None = typer.Option(None, "--bgr/--rgb", help="Channel order of the tensor (default: the preset's)."),
    scale: str | None = typer.Option(None, "--scale", help="Pixel multiplier, e.g. 1/255 (default: the preset's)."),
    labels: Path | None = typer.Option(None, "--labels", help="Text file with one class name per line."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Items per onnxruntime call."),
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        help="Refuse runs whose tensors need more (e.g. 8G; default: half of this machine's memory).",
    ),
    alpha: float = typer.Option(0.75, "--alpha", min=0.0, max=1.0, help="Heatmap opacity at full strength."),
    shared_scale: bool = typer.Option(False, "--shared-scale", help="One colour scale per grid row (all methods)."),
    device: str = opt_device(),
    providers: str | None = opt_providers(),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON record per image on stdout (file, prediction, "
        "probability, target, per method its output files and time) instead of the text.",
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Also write a self-contained HTML report (images, "
        "overlays, predictions, timings; no network) to this file.",
    ),
    **method_options,
):
    """Explain images with one or more methods; writes <stem>.<method>.png (overlay) and .npy (raw)."""
    from onnxplain.cli.common import expand_inputs
    from onnxplain.graph.builder import np_dtype
    from onnxplain.graph.describe import _dims, fmt_shape
    from onnxplain.graph.rewrite import class_axis_of
    from onnxplain.io import preprocess, render
    from onnxplain.runtime.explainer import Explainer

    say = (lambda *a, **k: None) if as_json else typer.echo
    methods = parse_methods(method or ["gradient"])
    settings = method_settings(methods, method_options)
    images = expand_inputs(images, recursive)
    for p in images:
        if p.suffix.lower() == ".npy":
            existing(p)
        else:
            existing(p, "image file")
    existing(model)
    if labels is not None:
        existing(labels, "labels file")
    budget = None if max_memory is None else parse_bytes(max_memory)
    given = dict(scale=scale, mean=mean, std=std, bgr=bgr, layout=layout, size=size, resize=resize)
    recipe = preprocess.resolve(preset, **given)  # checks the options before any work

    for s in settings.values():
        if s.get("rules") is not None:
            s["rules"] = rules_file(Path(s["rules"]))
    out_dir = Path(out_dir)
    outputs = Outputs(models=[model], protect=[*images, labels, *(s.get("rules") for s in settings.values())])
    outputs.folder(out_dir, "--out-dir").check()  # before any work
    if report is not None:
        outputs.file(Path(report), flag="--report").check()
    ex = Explainer(
        str(model),
        input=input,
        output=output,
        probabilities=probabilities,
        class_axis=class_axis,
        feeds=parse_feeds(feed),
        max_memory=budget,
        **session_options(device, providers),
    )
    stored = preprocess.from_metadata(ex.source)
    if stored is not None:  # the model's own recipe, under the options given on the command line
        recipe = preprocess.resolve(preset, **given, base=stored)
    names = class_names(ex.canonical.model, labels)
    n_classes = None
    if labels is not None and names is not None and ex.inner is None:
        try:
            n_classes = ex.num_classes
        except OnnxplainError:  # no class axis to count (a detector's selected boxes): nothing to check against
            n_classes = None
    if n_classes is not None and len(names) != n_classes:
        raise OnnxplainError(
            f"--labels {labels} names {len(names)} classes but the model's output has {n_classes}; "
            "give one name per class, one per line"
        )
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
        check_bytes(
            h * w * 3 * (8 + 4 + 1) + n_images * h * w * (4 + 3),
            budget,
            f"preprocessing {n_images} image(s) to {h}x{w}",
        )
    items = preprocess.load_items(
        images, recipe, shape, dtype=np_dtype(ex.x) or np.float32, integer=tokens, max_memory=budget
    )
    if not items:
        raise OnnxplainError("nothing to explain: the inputs hold no items")
    for it in items:  # validate everything before the first run: nothing half-written on bad input
        ex.check_input(it.tensor[None])
    spec, weights_file = _target_spec(
        ex, task, target, target_weights, box, klass, detector, coordinate, region, position
    )
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
                big = it.photo if it.photo is not None else it.display
                outputs.file(out_dir / f"{it.name}.{m}.png", size=max(big.nbytes, 256 * 256 * 3) + 65536)
        if len(methods) > 1 and it.display is not None:
            outputs.file(out_dir / "comparison.png", size=cells * 3 * (len(methods) + 1))
    outputs.check()
    for it in items:
        note = preprocess.describe_fit(it.source.name, it.geometry, recipe.size) if it.geometry is not None else None
        if note:
            say(f"note: {note}")

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
        w = (
            None
            if weights_file is None
            else (weights_file[s:e] if len(weights_file) == len(items) and len(items) > 1 else weights_file)
        )
        with running("resolving the target"):
            resolved[(s, e)] = ex.target(x, spec if spec is not None else target, w)
    first = resolved[groups[0]] if groups else None
    with status("building explanation graphs"):
        for m in entries:
            if unit is None and m.exportable and first is not None:
                params = {
                    k: settings[m.name][k]
                    for k in ("layer", "prefix_tokens", "rules")
                    if settings[m.name].get(k) is not None
                }
                (first.explainer or ex).graph("gradient" if m.kind == "looped" else m.name, first.mode, **params)
    if first is not None and first.mode == "weights" and first.notes:
        guessed = "" if task else " (guessed from the outputs; --task overrides)"
        kind = type(first.spec).__name__.lower() if first.spec is not None else "weights"
        typer.echo(f"target: {kind}{guessed if kind in ('detection', 'region', 'sequence') and spec is None else ''}")
    with outputs:
        written = []
        seconds = {m: [0.0] * len(items) for m in methods}
        files = [{m: [] for m in methods} for _ in items]
        shown_maps = {m: [None] * len(items) for m in methods}  # (values to colour, signed, note of its 0)
        figures = {m: [None] * len(items) for m in methods}
        with Progress(len(methods) * len(items), "explaining") as bar:
            for m in methods:
                for s, e in groups:
                    bar(description=f"{m}")
                    x = np.stack([it.tensor for it in items[s:e]])
                    tg = resolved[(s, e)]
                    t0 = time.perf_counter()
                    with running(f"running {m}"):
                        res = ex.run(
                            x,
                            m,
                            target=tg,
                            batch_size=batch_size,
                            progress=(lambda d, t, m=m: bar(description=f"{m} ({d}/{t} passes)")),
                            **{k: v for k, v in settings[m].items() if k != "batch_size"},
                        )
                    per_item = (time.perf_counter() - t0) / (e - s)
                    for k, i in enumerate(range(s, e)):
                        seconds[m][i] = per_item
                        a = res.attribution[k]
                        note = tg.notes[k] if tg.notes else "the target"
                        if not np.any(a):
                            raise OnnxplainError(
                                f"{m} gives an all-zero map for {items[i].name} ({note}): the explained "
                                "score does not depend on the input there; nothing written for it -- "
                                "choose another target (--task, --box, --region, --position) or method"
                            )
                        results[m][i] = a
                        if "token_scores" in res.outputs:
                            scores = res.outputs["token_scores"][k]
                            tokens_out[i].append(f"{m}: " + " ".join(f"{j}:{v:+.3g}" for j, v in enumerate(scores)))
                            files[i][m].append(render.save_npy(scores, out_dir / f"{items[i].name}.{m}.tokens.npy"))
                        if summary[i] is None:
                            summary[i] = (
                                _prediction(res, k, out_t.name, cax, ex.options.probabilities)
                                if tg.mode == "class"
                                else (None, None, None, None)
                            )
                        files[i][m].append(render.save_npy(a, out_dir / f"{items[i].name}.{m}.npy"))
                        if items[i].display is not None:
                            a2 = render.to_2d(a, channel_axis=item_channel_axis)
                            base = res.outputs.get("baseline")
                            base = None if base is None else render.to_2d(base[k], channel_axis=item_channel_axis)
                            shown = render.for_display(m, a2, base)
                            shown_maps[m][i] = shown
                            item = dict(tg.items[k]) if tg.items else None
                            if item is None and items[i].photo is not None:  # drawn on the photo, map resized back
                                picture = items[i].photo
                                values = preprocess.to_photo(shown[0], items[i].geometry, picture.shape[:2])
                            else:
                                picture, values = items[i].display, shown[0]
                            scale = render.robust_scale(values)
                            pic = render.overlay(picture, values, signed=shown[1], alpha=alpha, scale=scale)
                            if item is not None:
                                item["caption"] = None
                                pic = render.annotate(pic, item, source_size=_hw(items[i].tensor, item_channel_axis))
                            text = f"{items[i].name} · {m} · " + _caption(summary[i], names, note)
                            pic = render.with_colorbar(
                                pic, shown[1], scale, note=_scale_note(m, shown, settings[m].get("fill")), text=text
                            )
                            figures[m][i] = pic
                            files[i][m].append(render.save_png(pic, out_dir / f"{items[i].name}.{m}.png"))
                    bar(advance=e - s)

            grid_png = None
            if len(methods) > 1:
                shown = [i for i, it in enumerate(items) if it.display is not None][:32]
                if shown:
                    grid_png = _comparison(
                        render,
                        items,
                        shown,
                        methods,
                        shown_maps,
                        summary,
                        names,
                        groups,
                        resolved,
                        item_channel_axis,
                        alpha,
                        shared_scale,
                        {m: settings[m]["fill"] for m in methods if settings[m].get("fill") is not None},
                    )
                    written.append(render.save_png(grid_png, out_dir / "comparison.png"))
                    if len([it for it in items if it.display is not None]) > len(shown):
                        say(f"comparison grid shows the first {len(shown)} images")
        written += [f for per in files for fs in per.values() for f in fs]
        if report is not None:
            written.append(
                _report(report, model, items, methods, summary, names, seconds, files, figures, grid_png, recipe, ex)
            )
    # one line per item: prediction, explained target, score
    w = max(len(it.source.name if it.source.suffix.lower() != ".npy" else it.name) for it in items)
    notes = {i: resolved[(s, e)].notes[i - s] for s, e in groups for i in range(s, e) if resolved[(s, e)].notes}
    for i, (it, s) in enumerate(zip(items, summary)):
        label = it.source.name if it.source.suffix.lower() != ".npy" else it.name
        pred, tgt, score, prob = s
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "file": str(it.source),
                        "item": it.name,
                        "prediction": pred,
                        "prediction_label": names[pred]
                        if names and pred is not None and 0 <= pred < len(names)
                        else None,
                        "probability": prob,
                        "target": tgt if tgt is not None else notes.get(i),
                        "target_label": names[tgt] if names and tgt is not None and 0 <= tgt < len(names) else None,
                        "score": score,
                        "methods": [
                            {"method": m, "files": [str(f) for f in files[i][m]], "seconds": round(seconds[m][i], 6)}
                            for m in methods
                        ],
                    }
                )
            )
            continue
        if pred is None and tgt is None and i in notes:
            typer.echo(f"{label:<{w}}  target {notes[i]}")
            continue
        parts = [f"{label:<{w}}"]
        if pred is not None:
            parts.append(f"predicted {class_label(pred, names)}" + (f" (p={prob:.3g})" if prob is not None else ""))
        parts.append(f"target {class_label(tgt, names) if tgt is not None else '(weights)'}")
        if score is not None:
            parts.append(f"score {out_t.name}[{tgt}] = {score:.4g}")
        typer.echo("  ".join(parts))
        for line in tokens_out[items.index(it)]:
            typer.echo(f"  token scores (position:score) {line}")
    say(
        f"wrote {len(written)} files to {out_dir}/"
        + (f" and {report}" if report is not None else "")
        + f" (input {ex.entry} {fmt_shape(_dims(shape))}"
        + (f", explained through '{ex.inner}')" if ex.inner is not None else ")")
    )


def _caption(summary, names, note: str) -> str:
    """'predicted circle (p=0.98), explained: circle' for a class target; the target's note otherwise."""
    pred, tgt, _, prob = summary if summary is not None else (None, None, None, None)
    if pred is None and tgt is None:
        return f"explained: {note}"
    parts = []
    if pred is not None:
        parts.append(f"predicted {class_label(pred, names)}" + (f" (p={prob:.2f})" if prob is not None else ""))
    parts.append(f"explained: {class_label(tgt, names) if tgt is not None else note}")
    return ", ".join(parts)


def _scale_note(m: str, shown, fill=None) -> str:
    """The colour bar's note; for perturbation methods, what hidden pixels showed (``fill``)."""
    what = "99.5th percentile of |a|" + (", both signs" if shown[1] else "")
    note = f"{m}: colour scale to the {what}" + (f"; {shown[2]}" if shown[2] else "")
    return note + (f"; hidden parts showed: {fill}" if fill is not None else "")


def _comparison(
    render,
    items,
    shown,
    methods,
    shown_maps,
    summary,
    names,
    groups,
    resolved,
    channel_axis,
    alpha,
    shared_scale,
    fills=None,
):
    """The comparison grid: one row per image (caption: prediction, probability, explained target), one
    column per method under its colour bar. Each map is coloured to its own scale (the 99.5th percentile
    of |a|), written above it; ``shared_scale``: one scale per column (over its rows), written on its bar."""
    scales = {m: render.shared_scale([shown_maps[m][i][0] for i in shown]) for m in methods}
    rows, row_titles, titles = [], [], []
    for i in shown:
        tg = next(resolved[(s, e)] for s, e in groups if s <= i < e)
        mark = {k: v for k, v in tg.items[i - groups_start(groups, i)].items() if k != "caption"} if tg.items else None
        hw = _hw(items[i].tensor, channel_axis)
        cells = [render.annotate(items[i].display, mark, hw)]
        head = [] if titles else ["image"]
        for m in methods:
            values, signed, _ = shown_maps[m][i]
            scale = scales[m] if shared_scale else render.robust_scale(values)
            cells.append(
                render.annotate(
                    render.overlay(items[i].display, values, signed=signed, alpha=alpha, scale=scale), mark, hw
                )
            )
            fill = f" (fill {fills[m]})" if fills and m in fills and not titles else ""  # what hidden parts showed
            if not shared_scale:
                head.append((f"{m}{fill}\n" if not titles else "") + f"scale {'±' if signed else '0..'}{scale:.3g}")
            elif not titles:
                head.append(m + fill)
        titles.append(head if not titles else [""] + head)
        rows.append(cells)
        note = tg.notes[i - groups_start(groups, i)] if tg.notes else "the target"
        row_titles.append(items[i].name + "\n" + _caption(summary[i], names, note).replace(", ", "\n"))
    bars = [None] + [
        (shown_maps[m][shown[0]][1], scales[m] if shared_scale else None, shown_maps[m][shown[0]][2] or "0 = none")
        for m in methods
    ]
    note = (
        "colour scale: 99.5th percentile of |a| "
        + ("over each column, on its bar" if shared_scale else "of each map, written above it")
        + "; signed and offset maps: blue below 0, red above"
    )
    return render.grid(rows, titles=titles, row_titles=row_titles, column_bars=bars, note=note)


def _report(path, model, items, methods, summary, names, seconds, files, figures, grid_png, recipe, ex):
    """The self-contained HTML report of one explain run."""
    from onnxplain.io.report_html import Report

    r = Report(
        f"onnxplain explain: {Path(model).name}",
        f"{len(items)} input(s), method(s): {', '.join(methods)}, providers: {', '.join(ex.providers)}",
    )
    r.heading("Predictions")
    rows = []
    for i, it in enumerate(items):
        pred, tgt, score, prob = summary[i] if summary[i] is not None else (None, None, None, None)
        rows.append(
            [
                it.source.name if it.source.suffix.lower() != ".npy" else it.name,
                class_label(pred, names) if pred is not None else "-",
                prob if prob is not None else "-",
                class_label(tgt, names) if tgt is not None else "-",
                score if score is not None else "-",
            ]
        )
    r.table(["input", "predicted", "probability", "explained target", "score"], rows)
    r.heading("Method timings")
    r.table(
        ["method", "seconds per image (mean)", "seconds (total)"],
        [[m, float(np.mean(seconds[m])), float(np.sum(seconds[m]))] for m in methods],
    )
    if grid_png is not None:
        r.heading("Comparison")
        r.image(
            grid_png,
            "every method on every image; each map has its own colour scale, written above it; "
            "each column's colour bar below it",
        )
    r.heading("Overlays")
    if recipe is not None:
        r.paragraph(
            f"preprocessing: scale {recipe.scale:.4g}, mean {list(recipe.mean)}, std {list(recipe.std)}, "
            f"{'BGR' if recipe.bgr else 'RGB'}, {recipe.layout}, {recipe.resize} to "
            f"{recipe.size[1] if recipe.size else '?'}x{recipe.size[0] if recipe.size else '?'}"
        )
    for i, it in enumerate(items):
        if it.display is None:
            continue
        r.image(
            it.photo if it.photo is not None else it.display,
            f"{it.name}: the input",
            width=min(320, max(160, (it.photo if it.photo is not None else it.display).shape[1])),
        )
        for m in methods:
            if figures[m][i] is not None:
                r.image(
                    figures[m][i],
                    f"{it.name} · {m} ({seconds[m][i] * 1000:.0f} ms); arrays: "
                    + ", ".join(Path(f).name for f in files[i][m] if str(f).endswith(".npy")),
                    width=320,
                )
    return r.save(path)


def _prediction(res, k: int, out_name: str, cax: int, probabilities: bool = False):
    """(predicted class, explained target, score of the explained output at the target, probability of the
    predicted class) for item k; the probability is the softmax of the scores unless they are
    probabilities already (``--probabilities``, or non-negative scores summing to 1)."""
    tgt = int(res.target[k]) if res.target is not None else None
    out = res.outputs.get(out_name)
    if out is None or out.ndim < 2:
        return None, tgt, None, None
    o = np.moveaxis(np.asarray(out[k : k + 1], dtype=np.float64), cax, 1)
    scores = o.reshape(o.shape[0], o.shape[1], -1).sum(axis=2)[0]
    pred = int(np.argmax(scores))
    score = float(scores[tgt]) if tgt is not None and 0 <= tgt < len(scores) else None
    if o.ndim > 2:
        prob = None  # a dense output (segmentation, sequence): no single probability
    elif probabilities or (scores.min() >= 0 and abs(scores.sum() - 1) < 1e-3):
        prob = float(scores[pred])
    else:
        e = np.exp(scores - scores.max())
        prob = float(e[pred] / e.sum())
    return pred, tgt, score, prob


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
    given = [
        n
        for n, v in (
            ("--target", target),
            ("--target-weights", target_weights),
            ("--box", box),
            ("--region", region),
            ("--position", position),
        )
        if v is not None
    ]
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
            raise OnnxplainError(
                f"--position must be T, T:TOKEN or cK (the K-th decoded character), not '{position}'"
            ) from None
    if klass is not None or coordinate is not None:
        if task == "detect" or coordinate is not None:
            return tg.Detection(cls=klass, layout=detector, coordinate=coordinate), None
        return tg.Class(klass), None
    return None, None
