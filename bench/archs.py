"""Benchmark architectures written with onnx.helper and random (He-initialised) weights.

* ``resnet18()`` — ResNet-18 (He et al. 2016) at 224x224: 11.7 M parameters;
* ``mobilenet_v2()`` — MobileNetV2 (Sandler et al. 2018) at 224x224: 3.5 M parameters;
* ``transformer_stack(blocks)`` — pre-LN transformer blocks with LayerNorm and GELU written out
  in primitive ops, ~40 nodes per block, for graph-building time at ~6,000 nodes.

Same shapes and op mix as the torchvision models; no torch needed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Net:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def w(self, shape, scale=None):
        name = self.name("w")
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = np.sqrt(2.0 / fan_in) if scale is None else scale
        self.inits.append(numpy_helper.from_array((self.rng.normal(size=shape) * scale).astype(np.float32), name))
        return name

    def c(self, value, dtype=np.float32):
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op, *inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=self.name(op), **attrs))
        return out

    def conv_bn(self, x, cin, cout, k, s=1, group=1, act="relu"):
        y = self.op("Conv", x, self.w((cout, cin // group, k, k)), pads=[k // 2] * 4, strides=[s, s], group=group)
        bn = [
            self.c(1 + 0.1 * self.rng.normal(size=cout)),
            self.c(0.1 * self.rng.normal(size=cout)),
            self.c(0.1 * self.rng.normal(size=cout)),
            self.c(1 + 0.1 * self.rng.random(cout)),
        ]
        y = self.op("BatchNormalization", y, *bn)
        if act == "relu":
            y = self.op("Relu", y)
        elif act == "relu6":
            y = self.op("Clip", y, self.c(0.0), self.c(6.0))
        return y

    def model(self, x_shape, out, out_shape, opset=17):
        g = helper.make_graph(
            self.nodes,
            "bench",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)

    def head(self, y, c, classes=1000):
        y = self.op("Flatten", self.op("GlobalAveragePool", y))
        return self.op("Gemm", y, self.w((classes, c), scale=0.01), self.c(np.zeros(classes)), transB=1)


def resnet18(batch="N", size=224) -> onnx.ModelProto:
    net = Net()
    y = net.conv_bn("input", 3, 64, 7, 2)
    y = net.op("MaxPool", y, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            h = net.conv_bn(y, cin, cout, 3, s)
            h = net.conv_bn(h, cout, cout, 3, 1, act=None)
            short = y if (s == 1 and cin == cout) else net.conv_bn(y, cin, cout, 1, s, act=None)
            y = net.op("Relu", net.op("Add", h, short))
            cin = cout
    return net.model([batch, 3, size, size], net.head(y, 512), [batch, 1000])


def mobilenet_v2(batch="N", size=224) -> onnx.ModelProto:
    net = Net()
    y = net.conv_bn("input", 3, 32, 3, 2, act="relu6")
    cin = 32
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            h = net.conv_bn(y, cin, hidden, 1, act="relu6") if t != 1 else y
            h = net.conv_bn(h, hidden, hidden, 3, stride, group=hidden, act="relu6")
            h = net.conv_bn(h, hidden, c, 1, act=None)
            y = net.op("Add", y, h) if stride == 1 and cin == c else h
            cin = c
    y = net.conv_bn(y, cin, 1280, 1, act="relu6")
    return net.model([batch, 3, size, size], net.head(y, 1280), [batch, 1000])


def transformer_stack(blocks=150, tokens=16, dim=32, heads=4, batch="N") -> onnx.ModelProto:
    """Pre-LN transformer blocks in primitive ops (~40 nodes each)."""
    net = Net()
    hd = dim // heads

    def layernorm(x):
        mu = net.op("ReduceMean", x, axes=[-1])
        d = net.op("Sub", x, mu)
        var = net.op("ReduceMean", net.op("Mul", d, d), axes=[-1])
        y = net.op("Div", d, net.op("Sqrt", net.op("Add", var, net.c(1e-5))))
        return net.op("Add", net.op("Mul", y, net.c(np.ones(dim))), net.c(np.zeros(dim)))

    def gelu(x):
        e = net.op("Erf", net.op("Mul", x, net.c(1 / np.sqrt(2))))
        return net.op("Mul", net.op("Mul", x, net.op("Add", e, net.c(1.0))), net.c(0.5))

    split_heads = net.c([0, tokens, heads, hd], np.int64)
    merge = net.c([0, tokens, dim], np.int64)
    x = "input"
    for _ in range(blocks):
        h = layernorm(x)
        q, k, v = (
            net.op(
                "Transpose", net.op("Reshape", net.op("MatMul", h, net.w((dim, dim))), split_heads), perm=[0, 2, 1, 3]
            )
            for _ in range(3)
        )
        att = net.op(
            "Softmax",
            net.op("Mul", net.op("MatMul", q, net.op("Transpose", k, perm=[0, 1, 3, 2])), net.c(1 / np.sqrt(hd))),
            axis=-1,
        )
        o = net.op("Reshape", net.op("Transpose", net.op("MatMul", att, v), perm=[0, 2, 1, 3]), merge)
        x = net.op("Add", x, net.op("MatMul", o, net.w((dim, dim))))
        h = gelu(net.op("MatMul", layernorm(x), net.w((dim, 2 * dim))))
        x = net.op("Add", x, net.op("MatMul", h, net.w((2 * dim, dim))))
    pooled = net.op("ReduceMean", x, axes=[1], keepdims=0)
    out = net.op("Gemm", pooled, net.w((10, dim)), transB=1)
    return net.model([batch, tokens, dim], out, [batch, 10], opset=17)
