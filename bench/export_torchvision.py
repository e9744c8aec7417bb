"""Export torchvision architectures (random weights) to ONNX for bench/bench_speed.py. Dev only: needs torch.

    PYTHONPATH=/path/to/torch python bench/export_torchvision.py [--out bench/.models] [names...]

torch is never imported by onnxplain or its tests; the exported files are git-ignored. A file already there is
kept: delete it to export it again.
"""

from __future__ import annotations

import argparse
import pathlib

NAMES = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16"]


def main():
    import torch
    import torchvision

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / ".models"))
    p.add_argument("names", nargs="*", default=NAMES)
    a = p.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in a.names:
        path = out / f"{name}.onnx"
        if path.exists():
            continue
        model = getattr(torchvision.models, name)(weights=None).eval()
        if name == "vit_b_16":  # torchvision zero-initialises ViT's head: every input gradient would be exactly
            # zero, and the Explainer's zero-attribution guard would run its finite-difference check on every call
            torch.nn.init.normal_(model.heads.head.weight, std=0.02)
        x = torch.randn(1, 3, 224, 224)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
        print(name, path.stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
