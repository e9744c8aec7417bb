"""Fusing exporters' decompositions of activations and LayerNorm (onnxplain/graph/fuse.py).

* Per pattern: a one-activation graph in each spelling exporters write fuses into the single op,
  the exported forward is the model's, bit for bit (float32 in onnxruntime, float64 in
  onnx.reference), the exported graph passes the full checker at the model's opset, and its
  gradient matches finite differences;
  look-alikes (other constants, shared intermediates, graph outputs) are left alone.
* Per zoo model (tests/zoo/*_decomposed.onnx, paddle_hardswish.onnx, made by models/zoo/idioms.py):
  the same checks, and every method explains the decomposed model exactly as it explains its
  *native twin*, the same model with the single ONNX op written in (built here by replacing each
  activation's named scope, not by the fusion code).
* Properties the fusion is for: LRP-0 / LRP-epsilon conserve the logit on the bias-free Paddle
  HardSwish CNN (unfused they keep a fraction of it); guided backprop and the deconvnet differ from
  the gradient on PyTorch's SiLU (unfused they equal it), and guided backprop on Swish is
  Swish'(x) relu(g) (numpy); DeepLIFT stays complete.
"""

import json
import math
import pathlib

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from onnx import helper, numpy_helper
from oracle import check_vjp, run_ref, to_float64

import onnxplain
from onnxplain.graph.canonicalize import canonicalize, export_graph
from onnxplain.graph.describe import describe, format_text
from onnxplain.graph.fuse import fuse
from onnxplain.io.resources import rules_dir
from onnxplain.runtime.session import make_session

ZOO = pathlib.Path(__file__).parent / "zoo"
MANIFEST = {e["file"]: e for e in json.loads((ZOO / "manifest.json").read_text())}


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-300))


def parse(body: str, opset: int = 13, shape: str = "2, 6") -> onnx.ModelProto:
    return onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : {opset}]>
        g (float[{shape}] x) => (float[{shape}] y) {{ {body} }}""")


def ops(model) -> list:
    return [n.op_type for n in model.graph.node]


def forward32(model, x):
    return make_session(model).run(None, {"x": x.astype(np.float32)})[0]


def assert_same_forward(model, x):
    """The canonical graph, exported, computes the model's forward bit for bit (the fused nodes' own
    decompositions are put back), in float32 (onnxruntime) and float64 (onnx.reference)."""
    fused = export_graph(canonicalize(model).graph, model)
    onnx.checker.check_model(fused, full_check=True)
    np.testing.assert_array_equal(forward32(fused, x), forward32(model, x))
    m64 = to_float64(model)
    f64 = export_graph(canonicalize(m64).graph, m64)
    name = model.graph.output[0].name
    np.testing.assert_array_equal(run_ref(f64, {"x": x})[name], run_ref(m64, {"x": x})[name])


# ---- the patterns ------------------------------------------------------------------------------------
HARDSWISH = {
    "paddle_div": "t = Add(x, three)\n c = Clip(t, zero, six)\n m = Mul(x, c)\n y = Div(m, six)",
    "paddle_sixth": "t = Add(three, x)\n c = Clip(t, zero, six)\n m = Mul(c, x)\n y = Mul(m, sixth)",
    "gate_first": "t = Add(x, three)\n c = Clip(t, zero, six)\n h = Div(c, six)\n y = Mul(x, h)",
    "min_max": "t = Add(x, three)\n a = Max(t, zero)\n c = Min(a, six)\n m = Mul(x, c)\n y = Div(m, six)",
    "max_min": "t = Add(x, three)\n a = Min(six, t)\n c = Max(a, zero)\n m = Mul(x, c)\n y = Div(m, six)",
    "min_relu": "t = Add(x, three)\n a = Relu(t)\n c = Min(a, six)\n m = Mul(x, c)\n y = Mul(m, sixth)",
    "torch_hardsigmoid": "h = HardSigmoid <alpha = 0.16666667> (x)\n y = Mul(x, h)",
}
CONSTS = """three = Constant <value = float {3.0}> ()
 zero = Constant <value = float {0.0}> ()
 six = Constant <value = float {6.0}> ()
 sixth = Constant <value = float {0.16666667}> ()
 half = Constant <value = float {0.5}> ()
 one = Constant <value = float {1.0}> ()
 two = Constant <value = float {2.0}> ()
 r2 = Constant <value = float {1.4142135}> ()
 ir2 = Constant <value = float {0.70710677}> ()
 k = Constant <value = float {0.7978846}> ()
 c3 = Constant <value = float {0.044715}> ()
 e3 = Constant <value = float {3.0}> ()
 q = Constant <value = float {1.702}> ()
 """
OTHERS = {
    "hardsigmoid": ("HardSigmoid", "t = Add(x, three)\n c = Clip(t, zero, six)\n y = Div(c, six)"),
    "silu": ("Swish", "s = Sigmoid(x)\n y = Mul(x, s)"),
    "silu_swapped": ("Swish", "s = Sigmoid(x)\n y = Mul(s, x)"),
    "quick_gelu": ("Swish", "a = Mul(x, q)\n s = Sigmoid(a)\n y = Mul(x, s)"),
    "gelu_torch": ("Gelu", "d = Div(x, r2)\n e = Erf(d)\n p = Add(e, one)\n m = Mul(x, p)\n y = Mul(m, half)"),
    "gelu_half_first": ("Gelu", "h = Mul(x, half)\n d = Div(x, r2)\n e = Erf(d)\n p = Add(one, e)\n y = Mul(h, p)"),
    "gelu_cdf": ("Gelu", "d = Mul(ir2, x)\n e = Erf(d)\n p = Add(e, one)\n c = Mul(half, p)\n y = Mul(x, c)"),
    "gelu_over_two": ("Gelu", "d = Div(x, r2)\n e = Erf(d)\n p = Add(e, one)\n m = Mul(p, x)\n y = Div(m, two)"),
    "gelu_tanh_torch": (
        "Gelu",
        "s = Mul(x, x)\n cu = Mul(x, s)\n a = Mul(c3, cu)\n i = Add(x, a)\n u = Mul(k, i)\n"
        " t = Tanh(u)\n p = Add(one, t)\n m = Mul(x, p)\n y = Mul(half, m)",
    ),
    "gelu_tanh_pow": (
        "Gelu",
        "cu = Pow(x, e3)\n a = Mul(cu, c3)\n i = Add(x, a)\n u = Mul(i, k)\n t = Tanh(u)\n"
        " p = Add(t, one)\n h = Mul(half, x)\n y = Mul(h, p)",
    ),
}
PATTERNS = {**{f"hardswish_{k}": ("HardSwish", v) for k, v in HARDSWISH.items()}, **OTHERS}


def pattern_model(body: str, opset: int = 13, shape: str = "2, 6") -> onnx.ModelProto:
    return parse(CONSTS + body, opset, shape)


def pattern_input(shape=(2, 6), seed=0):
    """Values spread over [-5, 5], away from HardSwish's kinks at -3 and 3 (finite differences)."""
    x = np.random.default_rng(seed).uniform(-5, 5, size=shape)
    return np.where(np.abs(np.abs(x) - 3) < 0.05, x + 0.1, x)


@pytest.mark.parametrize("name", PATTERNS)
def test_pattern_fuses_with_the_same_forward_and_gradient(name):
    op, body = PATTERNS[name]
    model = pattern_model(body)
    can = canonicalize(model)
    assert [n.op for n in can.graph.nodes] == [op]
    assert len(can.fused) == 1 and can.fused[0].op == op
    x = pattern_input()
    assert_same_forward(model, x)
    res = check_vjp(model, {"x": x.astype(np.float32)}, "x", "y", directions=4, h=1e-6)
    assert res.error < 1e-6 and res.error_f32 < 1e-5


def test_fused_attributes():
    def fused(body, opset=13):
        node = canonicalize(pattern_model(body, opset)).graph.nodes[0]
        return node.op, dict(node.attrs)

    assert fused(OTHERS["quick_gelu"][1]) == ("Swish", {"alpha": pytest.approx(1.702, rel=1e-7)})
    assert fused(OTHERS["silu"][1]) == ("Swish", {"alpha": 1.0})
    assert fused(OTHERS["gelu_torch"][1]) == ("Gelu", {})
    assert fused(OTHERS["gelu_tanh_pow"][1]) == ("Gelu", {"approximate": "tanh"})
    op, attrs = fused(OTHERS["hardsigmoid"][1])
    assert op == "HardSigmoid" and attrs == {"alpha": pytest.approx(1 / 6), "beta": 0.5}


def test_clip_with_attribute_bounds_before_opset_11():
    """Opset 10 Clip takes min/max as attributes (onnxplain loads opsets >= 11, so fuse the graph directly)."""
    model = parse(
        """three = Constant <value = float {3.0}> ()
        six = Constant <value = float {6.0}> ()
        t = Add(x, three)
        c = Clip <min = 0.0, max = 6.0> (t)
        m = Mul(x, c)
        y = Div(m, six)""",
        opset=10,
    )
    graph = gs.import_onnx(model)
    fusions = fuse(graph)
    graph.cleanup()  # the Constant nodes the pattern read
    assert [f.op for f in fusions] == ["HardSwish"] and [n.op for n in graph.nodes] == ["HardSwish"]
    exported = export_graph(graph, model)  # the model's own nodes, valid at opset 10
    assert ops(exported) == ["Add", "Clip", "Mul", "Div"]
    onnx.checker.check_model(exported, full_check=True)
    x = pattern_input()
    np.testing.assert_array_equal(forward32(exported, x), forward32(model, x))


LAYERNORMS = {
    "pow_div": (
        """m = ReduceMean <axes = [-1]> (x)\n d = Sub(x, m)\n p = Pow(d, two)\n v = ReduceMean <axes = [-1]> (p)
                 a = Add(v, eps)\n s = Sqrt(a)\n n = Div(d, s)\n g = Mul(n, gamma)\n y = Add(g, beta)""",
        13,
        2,
        True,
    ),
    "mul_reciprocal": (
        """m = ReduceMean <axes = [1, 2]> (x)\n d = Sub(x, m)\n p = Mul(d, d)
                 v = ReduceMean <axes = [2, 1]> (p)\n a = Add(eps, v)\n s = Sqrt(a)\n r = Reciprocal(s)
                 n = Mul(r, d)\n y = Mul(gamma, n)""",
        13,
        1,
        False,
    ),
    "no_affine": (
        """m = ReduceMean <axes = [2]> (x)\n d = Sub(x, m)\n p = Pow(d, two)\n v = ReduceMean <axes = [2]> (p)
                 a = Add(v, eps)\n s = Sqrt(a)\n y = Div(d, s)""",
        13,
        2,
        False,
    ),
    "axes_input_opset18": (
        """m = ReduceMean(x, ax)\n d = Sub(x, m)\n p = Pow(d, two)\n v = ReduceMean(p, ax)
                 a = Add(v, eps)\n s = Sqrt(a)\n n = Div(d, s)\n g = Mul(n, gamma)\n y = Add(g, beta)""",
        18,
        2,
        True,
    ),
}


def layernorm_model(body, opset, gamma_shape=(1, 6), beta_shape=(6,)):
    r = np.random.default_rng(1)

    def values(shape, offset):
        return ", ".join(str(v) for v in offset + 0.3 * r.normal(size=int(np.prod(shape))))

    consts = f"""two = Constant <value = float {{2.0}}> ()
        eps = Constant <value = float {{1e-5}}> ()
        ax = Constant <value = int64[1] {{-1}}> ()
        gamma = Constant <value = float{list(gamma_shape)} {{{values(gamma_shape, 1)}}}> ()
        beta = Constant <value = float{list(beta_shape)} {{{values(beta_shape, 0)}}}> ()
        """
    return parse(consts + body, opset, "2, 3, 6" if "[1, 2]" not in body else "2, 1, 6")


@pytest.mark.parametrize("name", LAYERNORMS)
def test_layernorm_fuses_with_the_same_forward_and_gradient(name):
    body, opset, _, has_beta = LAYERNORMS[name]
    model = layernorm_model(body, opset)
    (node,) = canonicalize(model).graph.nodes
    assert node.op == "LayerNormalization" and len(node.inputs) == (3 if has_beta else 2)
    x = pattern_input(shape=(2, 1, 6) if "[1, 2]" in body else (2, 3, 6)) * 3 + 1
    assert_same_forward(model, x)
    res = check_vjp(model, {"x": x.astype(np.float32)}, "x", "y", directions=4, h=1e-6)
    assert res.error < 1e-6 and res.error_f32 < 1e-5


NOT_FUSED = {
    "gelu_wrong_sqrt2": CONSTS + "w = Constant <value = float {1.41}> ()\n d = Div(x, w)\n e = Erf(d)\n"
    " p = Add(e, one)\n m = Mul(x, p)\n y = Mul(m, half)",
    "gelu_no_half": CONSTS + "d = Div(x, r2)\n e = Erf(d)\n p = Add(e, one)\n y = Mul(x, p)",
    "hardswish_div5": CONSTS + "five = Constant <value = float {5.0}> ()\n t = Add(x, three)\n c = Clip(t, zero, six)\n"
    " m = Mul(x, c)\n y = Div(m, five)",
    "keras_hard_sigmoid_times_x": CONSTS + "h = HardSigmoid <alpha = 0.2> (x)\n y = Mul(x, h)",
    "relu6_over_6": CONSTS + "c = Clip(x, zero, six)\n y = Div(c, six)",
    "gate_of_another_tensor": CONSTS + "z = Abs(x)\n s = Sigmoid(z)\n y = Mul(x, s)",
    "swish_negative_alpha": CONSTS + "z = Neg(x)\n s = Sigmoid(z)\n y = Mul(x, s)",  # x sigmoid(-x): not ReLU-like
    "sigmoid_squared_times_x": CONSTS + "s = Sigmoid(x)\n m = Mul(s, s)\n y = Mul(x, m)",
}


@pytest.mark.parametrize("name", NOT_FUSED)
def test_look_alikes_are_left_alone(name):
    model = parse(NOT_FUSED[name])
    can = canonicalize(model)
    assert can.fused == [] and [n.op for n in can.graph.nodes] == [op for op in ops(model) if op != "Constant"]


def test_shared_intermediates_and_graph_outputs_block_fusion():
    shared = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[2, 6] x) => (float[2, 6] y, float[2, 6] z) { s = Sigmoid(x)\n y = Mul(x, s)\n z = Neg(s) }""")
    assert canonicalize(shared).fused == []
    output = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[2, 6] x) => (float[2, 6] y, float[2, 6] s) { s = Sigmoid(x)\n y = Mul(x, s) }""")
    assert canonicalize(output).fused == []
    body, opset, _, _ = LAYERNORMS["pow_div"]
    centred_used = layernorm_model(body.replace("y = Add(g, beta)", "b = Add(g, beta)\n y = Add(b, d)"), opset)
    assert canonicalize(centred_used).fused == []
    across_batch = layernorm_model(body, opset, gamma_shape=(2, 1, 6))  # gamma varies along the batch axis:
    assert [n.op for n in canonicalize(across_batch).graph.nodes] == ["LayerNormalization", "Mul", "Add"]  # kept out
    assert_same_forward(across_batch, pattern_input(shape=(2, 3, 6)))
    wrong_axes = layernorm_model(body.replace("axes = [-1]> (p)", "axes = [1]> (p)"), opset)
    assert canonicalize(wrong_axes).fused == []
    assert canonicalize(pattern_model(OTHERS["silu"][1]), fuse=False).fused == []


@pytest.mark.parametrize(
    "op, body, opset, kept",
    [
        ("HardSwish", HARDSWISH["paddle_div"], 13, False),
        ("HardSwish", HARDSWISH["paddle_div"], 14, True),
        ("Gelu", OTHERS["gelu_torch"][1], 19, False),
        ("Gelu", OTHERS["gelu_torch"][1], 20, True),
        ("Swish", OTHERS["silu"][1], 13, False),
        ("Swish", OTHERS["silu"][1], 24, False),
        ("LayerNormalization", LAYERNORMS["pow_div"][0], 17, False),
    ],
)  # its rule recomputes the statistics: no copy
def test_exports_restore_the_models_nodes_and_write_copies_for_the_opset(op, body, opset, kept):
    """The explained graph runs the model's own nodes forward; DeepLIFT's copy of the forward (the
    baseline pass) holds the fused op, written in primitives where the opset lacks it (Swish always:
    onnxruntime 1.31 has no Swish kernel)."""
    model = layernorm_model(body, opset) if op == "LayerNormalization" else pattern_model(body, opset)
    assert canonicalize(model).fused[0].op == op
    opts = onnxplain.Options(input="x", output="y", probabilities=True, target_mode="weights", baseline_input=True)
    g = onnxplain.build(model, "deeplift", opts)
    onnx.checker.check_model(g, full_check=True)
    assert ops(g).count(op) == (1 if kept else 0)
    mine = [n.op_type for n in model.graph.node if n.op_type != "Constant"]
    assert [n.op_type for n in g.graph.node if not n.name.startswith("onnxplain/")] == mine
    x = pattern_input(shape=(2, 3, 6) if op == "LayerNormalization" else (2, 6))
    xb = pattern_input(shape=x.shape, seed=1)
    w = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    y, a = make_session(g).run(
        ["y", "attribution"], {"x": x.astype(np.float32), "baseline": xb.astype(np.float32), "target_weights": w}
    )
    np.testing.assert_array_equal(y, forward32(model, x))
    want = np.sum(w * (forward32(model, x) - forward32(model, xb)), dtype=np.float64)
    assert math.isclose(float(a.sum(dtype=np.float64)), want, rel_tol=1e-4)  # complete, in float32


def lowered_forward(op, attrs, x, extra=()):
    """Export a graph holding one fused ``op`` node (no decomposition to restore) at opset 13."""
    model = parse("y = Relu(x)", 13, ", ".join(str(d) for d in x.shape))
    graph = gs.import_onnx(model)
    xt, yt = graph.inputs[0], graph.outputs[0]
    graph.nodes = [
        gs.Node(op, attrs=attrs, inputs=[xt, *[gs.Constant(f"c{i}", v) for i, v in enumerate(extra)]], outputs=[yt])
    ]
    lowered = export_graph(graph, model)
    assert op not in ops(lowered)
    onnx.checker.check_model(lowered, full_check=True)
    return forward32(lowered, x)


def test_ops_without_a_decomposition_are_written_in_primitives_for_older_opsets():
    x = pattern_input(shape=(2, 3, 6)).astype(np.float32)
    x64 = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(lowered_forward("HardSwish", {}, x), x64 * np.clip(x64 / 6 + 0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(
        lowered_forward("Swish", {"alpha": 1.702}, x), x64 / (1 + np.exp(-1.702 * x64)), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        lowered_forward("Gelu", {}, x), 0.5 * x64 * (1 + erf(x64 / math.sqrt(2))), rtol=1e-6, atol=1e-6
    )
    tanh = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    np.testing.assert_allclose(lowered_forward("Gelu", {"approximate": "tanh"}, x), tanh, rtol=1e-6, atol=1e-6)
    gamma, beta = np.linspace(0.5, 1.5, 6, dtype=np.float32), np.linspace(-1, 1, 6, dtype=np.float32)
    norm = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-3) * gamma + beta
    got = lowered_forward("LayerNormalization", {"axis": -1, "epsilon": 1e-3}, x, (gamma, beta))
    np.testing.assert_allclose(got, norm, rtol=1e-5, atol=1e-5)


# ---- the zoo models ------------------------------------------------------------------------------------
IDIOMS = {
    "paddle_hardswish.onnx": {"decomposed HardSwish": 3, "decomposed HardSigmoid": 1},
    "silu_decomposed.onnx": {"decomposed SiLU": 2, "decomposed QuickGELU": 1},
    "gelu_erf_decomposed.onnx": {"GELU (erf)": 3},
    "gelu_tanh_decomposed.onnx": {"GELU (tanh)": 2},
    "layernorm_decomposed.onnx": {"decomposed LayerNorm": 2},
}


def zoo_input(name, seed=5, scale=2.0):
    return np.random.default_rng(seed).normal(size=MANIFEST[name]["input_shape"]) * scale


@pytest.mark.parametrize("name", IDIOMS)
def test_zoo_idioms_fuse_with_the_same_forward_and_gradient(name):
    model = onnx.load(ZOO / name)
    can = canonicalize(model)
    assert {p: sum(f.pattern == p for f in can.fused) for p in IDIOMS[name]} == IDIOMS[name]
    assert len(can.fused) == sum(IDIOMS[name].values())
    x = zoo_input(name)
    assert_same_forward(model, x)
    res = check_vjp(model, {"x": x.astype(np.float32)}, "x", "logits", directions=4, h=1e-6)
    assert res.error < 1e-5 and res.error_f32 < 1e-4


def test_inspect_reports_the_fusions():
    info = describe(ZOO / "paddle_hardswish.onnx")
    assert info["fused"]["summary"] == {"decomposed HardSwish": 3, "decomposed HardSigmoid": 1}
    first = info["fused"]["nodes"][0]
    assert first["op"] in ("HardSwish", "HardSigmoid") and len(first["replaced"]) >= 3
    json.dumps(info)
    text = format_text(info)
    assert "fused     3 decomposed HardSwish, 1 decomposed HardSigmoid" in text
    assert "fused " not in format_text(describe(ZOO / "plain_cnn_ts11.onnx"))
    lines = {r["op"]: r for r in info["op_types"]}
    assert lines["HardSwish"]["on_path"] == 3 and lines["HardSigmoid"]["on_path"] == 1


# ---- native twins: the decomposed model explains like the model written with the single op ----------
def native_twin(model, scopes: dict, opset: int) -> onnx.ModelProto:
    """Replace the nodes of each named scope (an activation, in models/zoo/idioms.py's naming) by one
    node ``op(x, *extra)`` and raise the opset to ``opset`` (ReduceMean's axes become an input at 18)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name for i in g.initializer}
    for scope, (op, attrs, extra) in scopes.items():
        group = [n for n in g.node if n.name.startswith(scope + "/")]
        made = {o for n in group for o in n.output}
        ins = {i for n in group for i in n.input if i not in made and i not in inits}
        outside = {i for n in g.node if n not in group for i in n.input} | {o.name for o in g.output}
        out = [o for o in made if o in outside]
        assert len(ins) == 1 and len(out) == 1, (scope, ins, out)
        at = min(i for i, n in enumerate(g.node) if n in group)
        keep = [n for n in g.node if n not in group]
        keep.insert(at, helper.make_node(op, [*ins, *extra], out, name=f"{scope}/{op}", **attrs))
        del g.node[:]
        g.node.extend(keep)
    for n in g.node:
        if n.op_type == "ReduceMean" and opset >= 18 and any(a.name == "axes" for a in n.attribute):
            axes = next(list(a.ints) for a in n.attribute if a.name == "axes")
            g.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), f"{n.name}/axes"))
            n.input.append(f"{n.name}/axes")
            kept = [a for a in n.attribute if a.name != "axes"]
            del n.attribute[:]
            n.attribute.extend(kept)
    m.opset_import[0].version = opset
    onnx.checker.check_model(m, full_check=True)
    return m


HS, HSIG = ("HardSwish", {}, []), ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, [])
TWINS = {
    "paddle_hardswish.onnx": ({"/act1": HS, "/act2": HS, "/act3": HS, "/se/gate": HSIG}, 14),
    "silu_decomposed.onnx": (
        {"/act1": ("Swish", {}, []), "/act2": ("Swish", {}, []), "/quick_gelu": ("Swish", {"alpha": 1.702}, [])},
        24,
    ),
    "gelu_erf_decomposed.onnx": ({f"/act{i}": ("Gelu", {}, []) for i in range(3)}, 20),
    "gelu_tanh_decomposed.onnx": ({f"/act{i}": ("Gelu", {"approximate": "tanh"}, []) for i in range(2)}, 20),
    "layernorm_decomposed.onnx": (
        {
            "/act0": ("LayerNormalization", {"axis": -1, "epsilon": 1e-5}, ["/act0.gamma", "/act0.beta"]),
            "/act1": ("LayerNormalization", {"axis": -1, "epsilon": 1e-6}, ["/act1.gamma"]),
        },
        17,
    ),
}
METHODS = ["gradient", "guided_backprop", "deconvnet", "lrp_0", "lrp_epsilon", "lrp_epsilon_plus", "deeplift"]


def explain64(model, method, x, w, xb=None, fuse=True):
    m64 = to_float64(model)
    opts = onnxplain.Options(target_mode="weights", output="logits", baseline_input=method == "deeplift")
    g = onnxplain.build(canonicalize(m64, fuse=fuse), method, opts)
    feeds = {"x": x, "target_weights": w}
    if method == "deeplift":
        feeds["baseline"] = np.zeros_like(x) if xb is None else xb
    return run_ref(g, feeds)["attribution"]


@pytest.mark.parametrize("name", TWINS)
def test_decomposed_zoo_models_explain_like_their_native_twins(name):
    model = onnx.load(ZOO / name)
    scopes, opset = TWINS[name]
    twin = native_twin(model, scopes, opset)
    x = zoo_input(name)
    y = run_ref(to_float64(model), {"x": x})["logits"]
    np.testing.assert_allclose(run_ref(to_float64(twin), {"x": x})["logits"], y, rtol=1e-6, atol=1e-7)
    w = np.random.default_rng(2).normal(size=y.shape)
    for method in METHODS:
        got, want = explain64(model, method, x, w), explain64(twin, method, x, w)
        assert np.abs(want).max() > 0 and rel(got, want) < 1e-6, method


# ---- the properties the fusion is for ---------------------------------------------------------------
def explained_logit(model, x):
    y = run_ref(to_float64(model), {"x": x})["logits"]
    w = np.zeros_like(y)
    w[np.arange(len(y)), y.argmax(1)] = 1
    return w, y[np.arange(len(y)), y.argmax(1)]


def lrp_epsilon_file(tmp_path, epsilon):
    """The shipped lrp_epsilon.toml with the weighted layers' epsilon set to ``epsilon``."""
    text = (rules_dir() / "lrp_epsilon.toml").read_text()
    assert "epsilon = 0.25" in text
    path = tmp_path / "lrp_eps.toml"
    path.write_text(text.replace("epsilon = 0.25", f"epsilon = {epsilon}"))
    return path


def test_lrp_conserves_the_logit_through_paddle_hardswish(tmp_path):
    """Bias-free CNN: LRP-0 keeps the explained logit to 1e-6 (the rules carry relevance through the
    fused HardSwish and freeze the fused HardSigmoid gate); unfused, the +3 of each HardSwish and the
    split between its two factors lose most of it."""
    model = onnx.load(ZOO / "paddle_hardswish.onnx")
    x = zoo_input("paddle_hardswish.onnx")
    w, logit = explained_logit(model, x)

    def kept(method, **kw):
        return explain64(model, method, x, w, **kw).reshape(len(x), -1).sum(axis=1) / logit

    np.testing.assert_allclose(kept("lrp_0"), 1, rtol=1e-6)
    assert np.all(kept("lrp_0", fuse=False) < 0.5)
    m64 = to_float64(model)
    opts = onnxplain.Options(target_mode="weights", output="logits", rules=str(lrp_epsilon_file(tmp_path, 1e-4)))
    for fused, lo, hi in ((True, 1 - 1e-3, 1), (False, 0, 0.5)):
        g = onnxplain.build(canonicalize(m64, fuse=fused), "lrp_epsilon", opts)
        eps = run_ref(g, {"x": x, "target_weights": w})["attribution"].reshape(len(x), -1).sum(axis=1) / logit
        assert np.all((lo < eps) & (eps < hi)), (fused, eps)
    assert np.all(kept("lrp_epsilon") > 2 * kept("lrp_epsilon", fuse=False))  # eps = 0.25 absorbs some, by design


def test_guided_backprop_and_deconvnet_act_on_pytorch_silu():
    model = onnx.load(ZOO / "silu_decomposed.onnx")
    x = zoo_input("silu_decomposed.onnx")
    w = np.random.default_rng(2).normal(size=(len(x), 10))
    grad = explain64(model, "gradient", x, w)
    for method in ("guided_backprop", "deconvnet"):
        assert rel(explain64(model, method, x, w), grad) > 0.1, method
        assert rel(explain64(model, method, x, w, fuse=False), grad) < 1e-12, method  # the silent failure fixed


def test_guided_backprop_on_swish_is_its_slope_times_relu_of_the_cotangent():
    """Springenberg et al. 2015 on an MLP x -> W1 -> SiLU -> W2 -> QuickGELU -> W3, in numpy."""
    r = np.random.default_rng(4)
    W1, W2, W3 = r.normal(size=(6, 8)), r.normal(size=(8, 8)), r.normal(size=(8, 3))
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (("W1", W1), ("W2", W2), ("W3", W3))]
    inits.append(numpy_helper.from_array(np.float32(1.702), "q"))
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["z1"]),
        helper.make_node("Sigmoid", ["z1"], ["s1"]),
        helper.make_node("Mul", ["z1", "s1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "W2"], ["z2"]),
        helper.make_node("Mul", ["z2", "q"], ["u2"]),
        helper.make_node("Sigmoid", ["u2"], ["s2"]),
        helper.make_node("Mul", ["s2", "z2"], ["a2"]),
        helper.make_node("MatMul", ["a2", "W3"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    W1, W2, W3 = (numpy_helper.to_array(i).astype(np.float64) for i in inits[:3])
    q = float(np.float32(1.702))
    x, w = r.normal(size=(4, 6)), r.normal(size=(4, 3))

    def slope(z, alpha):
        s = 1 / (1 + np.exp(-alpha * z))
        return s + alpha * z * s * (1 - s)

    z1 = x @ W1
    z2 = (z1 / (1 + np.exp(-z1))) @ W2
    g2 = w @ W3.T
    g1 = (slope(z2, q) * np.maximum(g2, 0)) @ W2.T
    guided = (slope(z1, 1.0) * np.maximum(g1, 0)) @ W1.T
    np.testing.assert_allclose(explain64(model, "guided_backprop", x, w), guided, rtol=1e-10, atol=1e-12)
    deconv = np.maximum(np.maximum(g2, 0) @ W2.T, 0) @ W1.T
    np.testing.assert_allclose(explain64(model, "deconvnet", x, w), deconv, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", IDIOMS)
def test_deeplift_stays_complete_on_fused_models(name):
    model = onnx.load(ZOO / name)
    x, xb = zoo_input(name), zoo_input(name, seed=6, scale=1.0)
    m64 = to_float64(model)
    dy = run_ref(m64, {"x": x})["logits"] - run_ref(m64, {"x": xb})["logits"]
    w = np.random.default_rng(3).normal(size=dy.shape)
    a = explain64(model, "deeplift", x, w, xb=xb)
    # to 1e-6: the baseline pass uses the fused ops' exact constants (1/6, sqrt 2), the model float32-rounded ones
    assert math.isclose(a.sum(), float(np.sum(w * dy)), rel_tol=1e-6)
