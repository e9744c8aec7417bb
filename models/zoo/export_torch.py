"""Export the torch part of the test zoo to tests/zoo/ (dev-only: needs torch).

Small hand-written architectures (no torchvision) from several families are
exported with the TorchScript exporter (dynamo=False, opsets 11/13/17) and the
dynamo exporter (opsets 18/20).  Every file is checked with the full ONNX
checker and compared against torch with onnxruntime.

    python models/zoo/export_torch.py
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import opset_of, save_checked, update_manifest  # noqa: E402

NUM_CLASSES = 10


# ---------------------------------------------------------------------------
# architectures


class PlainCNN(nn.Module):
    """Conv-ReLU-MaxPool twice, then a two-layer MLP head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 8 * 8, 32),
            nn.ReLU(),
            nn.Linear(32, NUM_CLASSES),
        )

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.layer3 = BasicBlock(16, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1, 4),
            InvertedResidual(8, 16, 2, 4),
            InvertedResidual(16, 16, 1, 2),
        )
        self.last = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = self.expand(F.silu(self.reduce(self.pool(x))))
        return x * torch.sigmoid(s)


class MBConv(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            SqueezeExcite(hidden, max(2, cin // 4)),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class EfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(
            MBConv(16, 8, 1, 1),
            MBConv(8, 16, 2, 4),
            MBConv(16, 16, 1, 2),
        )
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(x, 1)))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class Transition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.conv(F.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(self, growth=4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)  # 16x16
        c = 8
        block1 = []
        for _ in range(3):
            block1.append(DenseLayer(c, growth))
            c += growth
        self.block1 = nn.Sequential(*block1)  # c = 20
        self.trans = Transition(c, c // 2)  # 10 ch, 8x8
        c //= 2
        block2 = []
        for _ in range(3):
            block2.append(DenseLayer(c, growth))
            c += growth
        self.block2 = nn.Sequential(*block2)  # c = 22
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, NUM_CLASSES)

    def forward(self, x):
        x = self.block2(self.trans(self.block1(self.stem(x))))
        x = F.relu(self.norm(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, via permute."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = super().forward(x)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, approximate):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU(approximate=approximate)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(0.5 + torch.rand(dim))  # layer scale, non-trivial

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NHWC
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6))  # 8x8
        self.stage1 = nn.Sequential(ConvNeXtBlock(16, approximate), ConvNeXtBlock(16, approximate))
        self.down = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Conv2d(16, 32, 2, 2))  # 4x4
        self.stage2 = ConvNeXtBlock(32, approximate)
        self.norm = nn.LayerNorm(32, eps=1e-6)
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean(dim=(-2, -1))))


class Attention(nn.Module):
    """Multi-head self attention written out with matmul/softmax/reshape/transpose."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, c = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = torch.softmax(attn, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(-1, n, c)
        return self.proj(out)


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, mlp_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, image=32, patch=8, dim=32, depth=2, heads=4, mlp_dim=64):
        super().__init__()
        n_patches = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [N, P, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class TinySegNet(nn.Module):
    """Encoder with strided convs, decoder with ConvTranspose and nearest/bilinear Upsample."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())  # 8 x H
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())  # H/2
        self.enc3 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())  # H/4
        self.up_t = nn.ConvTranspose2d(16, 16, 2, 2)  # H/2
        self.side = nn.Conv2d(16, 16, 1)
        self.up_nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, 1, 1), nn.ReLU())
        self.up_bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.up_t(e3) + self.up_nearest(self.side(e3)) + e2
        d1 = self.up_bilinear(self.dec(d2))
        return self.classifier(torch.cat([d1, e1], dim=1))


class ActivationZoo(nn.Module):
    """Many activations, InstanceNorm, ceil-mode AvgPool and a Softmax output."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.leaky = nn.LeakyReLU(0.1)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.elu = nn.ELU(alpha=0.8)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.selu = nn.SELU()
        self.prelu = nn.PReLU(8)
        self.hswish = nn.Hardswish()
        self.conv4 = nn.Conv2d(8, 4, 1)
        self.fc1 = nn.Linear(4 * 9 * 9, 32)
        self.softplus = nn.Softplus()
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(32, 32)
        self.hsig = nn.Hardsigmoid()
        self.fc3 = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):  # x: [N, 3, 16, 16]
        x = self.inorm(self.leaky(self.conv1(x)))
        x = self.pool(self.elu(self.conv2(x)))  # 9x9, partial windows at the border
        x = self.hswish(self.prelu(self.selu(self.conv3(x))))
        x = torch.tanh(self.conv4(x))
        h = self.dropout(self.softplus(self.fc1(torch.flatten(x, 1))))
        h = self.fc2(h)
        h = torch.sigmoid(h) + self.hsig(h) * h
        return torch.softmax(self.fc3(h), dim=1)


# ---------------------------------------------------------------------------
# export plan: (family, model factory, input shape, output name, note)

FAMILIES = {
    "plain_cnn": (PlainCNN, (3, 32, 32), "logits", "class logits [N,10]"),
    "resnet": (ResNet, (3, 32, 32), "logits", "class logits [N,10]"),
    "mobilenetv2": (MobileNetV2, (3, 32, 32), "logits", "class logits [N,10]"),
    "efficientnet": (EfficientNet, (3, 32, 32), "logits", "class logits [N,10]"),
    "densenet": (DenseNet, (3, 32, 32), "logits", "class logits [N,10]"),
    "convnext_erf": (lambda: ConvNeXt("none"), (3, 32, 32), "logits", "class logits [N,10]; exact erf GELU"),
    "convnext_tanh": (lambda: ConvNeXt("tanh"), (3, 32, 32), "logits", "class logits [N,10]; tanh-approximate GELU"),
    "vit": (ViT, (3, 32, 32), "logits", "class logits [N,10] from the class token"),
    "segnet": (TinySegNet, (3, 32, 32), "seg_logits", "per-pixel class logits [N,4,32,32]"),
    "activations": (ActivationZoo, (3, 16, 16), "probs", "softmax probabilities [N,10], not logits"),
}

# (family, exporter, opset, dynamic batch, keep_bn).  Both exporters fold eval-mode
# BatchNorm into the preceding Conv by default; keep_bn=True skips that folding
# (TorchScript: TrainingMode.PRESERVE on an eval model; dynamo: optimize=False,
# which leaves the raw, unoptimized graph) so BatchNormalization nodes survive.
PLAN = [
    ("plain_cnn", "torch-script", 11, True, False),
    ("plain_cnn", "torch-dynamo", 18, False, False),
    ("resnet", "torch-script", 13, True, False),
    ("resnet", "torch-dynamo", 18, True, True),
    ("mobilenetv2", "torch-script", 11, False, False),
    ("mobilenetv2", "torch-dynamo", 20, True, False),
    ("efficientnet", "torch-script", 13, False, True),
    ("efficientnet", "torch-dynamo", 18, True, False),
    ("densenet", "torch-script", 17, True, False),
    ("densenet", "torch-dynamo", 20, False, False),
    ("convnext_erf", "torch-script", 17, False, False),
    ("convnext_erf", "torch-dynamo", 18, True, False),
    ("convnext_tanh", "torch-script", 13, True, False),
    ("convnext_tanh", "torch-dynamo", 20, False, False),
    ("vit", "torch-script", 17, True, False),
    ("vit", "torch-dynamo", 18, False, False),
    ("segnet", "torch-script", 11, True, True),
    ("segnet", "torch-dynamo", 20, True, False),
    ("activations", "torch-script", 13, True, False),
    ("activations", "torch-dynamo", 18, False, False),
    ("activations", "torch-dynamo", 23, True, False),
]

SHORT = {"torch-script": "ts", "torch-dynamo": "dynamo"}


def randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BN/IN/LN layer non-trivial statistics and affine parameters."""
    with torch.no_grad():
        for m in model.modules():
            norm = isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.LayerNorm))
            if norm and getattr(m, "weight", None) is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            if isinstance(m, nn.PReLU):
                m.weight.copy_(0.05 + 0.4 * torch.rand(m.weight.shape, generator=gen))


def build(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[family][0]()
    gen = torch.Generator().manual_seed(1)
    randomize_norms(model, gen)
    return model.eval()


def export_one(model, x, exporter, opset, dynamic, out_name, keep_bn) -> onnx.ModelProto:
    if exporter == "torch-script":
        buf = io.BytesIO()
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=[out_name],
            dynamic_axes={"input": {0: "batch"}, out_name: {0: "batch"}} if dynamic else None,
            training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
        )
        return onnx.load_from_string(buf.getvalue())
    dyn = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
    prog = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        opset_version=opset,
        input_names=["input"],
        output_names=[out_name],
        dynamic_shapes=dyn,
        optimize=not keep_bn,
    )
    model_proto = prog.model_proto
    return onnx.inliner.inline_local_functions(model_proto)


def compare_ort(path: Path, model: nn.Module, shape, batch: int) -> float:
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    err = float(np.max(np.abs(got - want)))
    if not np.allclose(got, want, atol=1e-4, rtol=1e-4):
        raise AssertionError(f"{path.name}: onnxruntime differs from torch by {err}")
    return err


def main(only: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore")
    entries = []
    for family, exporter, opset, dynamic, keep_bn in PLAN:
        _, shape, out_name, note = FAMILIES[family]
        fname = f"{family}_{SHORT[exporter]}{opset}.onnx"
        model = build(family)
        x = torch.randn(2 if dynamic else 1, *shape, generator=torch.Generator().manual_seed(3))
        if only is None or fname in only or family in only:
            proto = export_one(model, x, exporter, opset, dynamic, out_name, keep_bn)
            proto.producer_name = f"onnxplain-zoo/{exporter}"
            path = save_checked(proto, fname)
            errs = [compare_ort(path, model, shape, b) for b in ((1, 3) if dynamic else (1,))]
            real_opset = opset_of(onnx.load(str(path)))
            if real_opset != opset:
                raise AssertionError(f"{fname}: asked opset {opset}, got {real_opset}")
            print(f"{fname:32s} {path.stat().st_size:8d} B  max|ort-torch|={max(errs):.2e}")
        entries.append(
            {
                "file": fname,
                "family": "convnext" if family.startswith("convnext") else family,
                "source": exporter,
                "opset": opset,
                "input": "input",
                "input_shape": [2 if dynamic else 1, *shape],
                "dynamic_batch": dynamic,
                "output": out_name,
                "logits_note": note + ("; BatchNormalization nodes kept" if keep_bn else ""),
            }
        )
    update_manifest(entries, {"torch-script", "torch-dynamo"})


if __name__ == "__main__":
    main(sys.argv[1:] or None)
