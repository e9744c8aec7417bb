"""Check every tests/zoo/*.onnx against the zoo limits and print a summary table.

For each file: full checker, size, parameter count, opset, op types and the
best-of-3 time of one float64 forward pass in onnx.reference.ReferenceEvaluator
(shape taken from manifest.json).  Needs only numpy and onnx.

    python models/zoo/check_zoo.py [--ops]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MANIFEST, MAX_BYTES, MAX_PARAMS, ZOO_DIR, count_params, opset_of, time_reference_f64  # noqa: E402

MAX_SECONDS = 0.5


def main() -> int:
    show_ops = "--ops" in sys.argv
    manifest = {e["file"]: e for e in json.loads(MANIFEST.read_text())}
    files = sorted(p.name for p in ZOO_DIR.glob("*.onnx"))
    bad = []
    missing = sorted(set(files) ^ set(manifest))
    if missing:
        bad.append(f"files and manifest disagree: {missing}")
    print(f"{'file':34s} {'source':13s} {'opset':>5s} {'bytes':>8s} {'params':>7s} {'f64 ref s':>9s}")
    for name in files:
        entry = manifest.get(name)
        if entry is None:
            continue
        model = onnx.load(str(ZOO_DIR / name))
        onnx.checker.check_model(model, full_check=True)
        size = (ZOO_DIR / name).stat().st_size
        params = count_params(model)
        seconds = time_reference_f64(model, entry["input_shape"])
        opset = opset_of(model)
        print(f"{name:34s} {entry['source']:13s} {opset:5d} {size:8d} {params:7d} {seconds:9.3f}")
        if show_ops:
            print("    ops:", " ".join(sorted({n.op_type for n in model.graph.node})))
        if model.functions:
            bad.append(f"{name}: has local functions")
        if opset != entry["opset"]:
            bad.append(f"{name}: opset {opset} but manifest says {entry['opset']}")
        if size >= MAX_BYTES or params >= MAX_PARAMS or seconds >= MAX_SECONDS:
            bad.append(f"{name}: over a limit")
    for line in bad:
        print("PROBLEM:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
