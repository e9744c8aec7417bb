"""Localisation of detection and segmentation targets on the shipped demo detector and segmenter.

    python models/demo/evaluate_detect_segment.py [--n 16] [--out models/demo/evaluation]

For every ground-truth object of ``--n`` generated scenes (make_scenes, seed 2024): the detector's
detection that best matches the object's box (Detection(box, cls)) and the segmenter's class map
summed over the object's mask (Region(mask, cls)) are explained by each method; each map is scored
against the object's box (detection) or mask (segmentation) by the pointing game (Zhang et al. 2016)
and relevance mass (Arras et al. 2022; RISE/D-RISE maps minus their mean). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from onnxplain.io.demo import format_task_table, run_task_demo  # noqa: E402


def markdown(r) -> str:
    truth = "box" if r.task == "detect" else "mask"
    lines = ["| method | s / object | pointing game | relevance mass |", "|---|---:|---:|---:|"]
    for m in r.pointing:
        lines.append(f"| {m} | {r.seconds[m]:.2f} | {r.pointing[m]:.2f} | {r.mass[m]:.2f} |")
    lines.append(
        f"\n{r.objects} objects; the ground-truth {truth} covers {r.mask_area:.3f} of the image on average "
        "(a uniform map's relevance mass)."
    )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--out", type=Path, default=HERE / "evaluation")
    args = ap.parse_args()
    for task in ("detect", "segment"):
        t0 = time.perf_counter()
        r = run_task_demo(args.out, task, n=args.n)
        print(f"## {task} ({time.perf_counter() - t0:.0f} s)\n")
        print(format_task_table(r))
        print()
        print(markdown(r))
        print()


if __name__ == "__main__":
    main()
