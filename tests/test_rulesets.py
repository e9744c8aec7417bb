"""Rule sets as data: shipped files load, bad files fail naming file and key, first match wins;
guided backprop and deconvnet against a numpy re-implementation of the papers."""

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain import Explainer, OnnxplainError
from onnxplain.io.resources import rules_dir
from onnxplain.rules.ruleset import load_ruleset

RULES = sorted(pathlib.Path(rules_dir()).glob("*.toml"))
rng = np.random.default_rng(3)


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_shipped_rule_sets_load(path):
    rs = load_ruleset(path)
    assert rs.name == path.stem and rs.description and rs.entries


@pytest.mark.parametrize(
    "text,match",
    [
        ('nam = "x"', "unknown key 'nam'"),
        ('[[rule]]\nops = ["Relu"]\nrule = "nope"', r"rule\[0\]: rule: unknown rule 'nope'"),
        ('[[rule]]\nops = ["Relu"]', r"rule\[0\]: missing key 'rule'"),
        ('[[rule]]\nrule = "guided"', r"rule\[0\]: give at least one of ops, names, position"),
        ('[[rule]]\nops = ["Conv2d"]\nrule = "guided"', r"rule\[0\]: ops: 'Conv2d' is not an ONNX op type"),
        ('[[rule]]\nnames = ["(unclosed"]\nrule = "guided"', r"rule\[0\]: names: bad regular expression"),
        (
            '[[rule]]\nops = ["Relu"]\nrule = "guided"\nepsilon = 1',
            r"rule\[0\]: unknown key 'epsilon' for rule 'guided'",
        ),
        ('[[rule]]\nposition = "last"\nrule = "guided"', r"rule\[0\]: position: expected one of"),
        ('base = "lrp"', "'base' must be"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_bad_rule_files_name_file_and_key(tmp_path, text, match):
    p = tmp_path / "mine.toml"
    p.write_text(text)
    with pytest.raises(OnnxplainError, match=match) as err:
        load_ruleset(p)
    assert str(p) in str(err.value)


def mlp(bias=True):
    """x[N,6] -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> logits[N,3]."""
    ws = [rng.normal(size=s).astype(np.float32) for s in [(6, 8), (8, 8), (8, 3)]]
    bs = [rng.normal(size=s[1]).astype(np.float32) * bias for s in [(6, 8), (8, 8), (8, 3)]]
    inits, nodes, prev = [], [], "x"
    for i, (w, b_) in enumerate(zip(ws, bs)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b_, f"B{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [f"z{i}"], name=f"fc{i}"))
        prev = f"z{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"a{i}"], name=f"relu{i}"))
            prev = f"a{i}"
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), ws, bs


def numpy_backward(x, ws, bs, target, relu_rule):
    """The papers' backward pass through Gemm/Relu layers with a given ReLU rule."""
    acts, pre = [x], []
    for i, (w, b_) in enumerate(zip(ws, bs)):
        z = acts[-1] @ w + b_
        pre.append(z)
        acts.append(np.maximum(z, 0) if i < 2 else z)
    g = np.eye(3)[target]
    for i in reversed(range(3)):
        if i < 2:
            g = relu_rule(pre[i], g)
        g = g @ ws[i].T
    return g


GUIDED = lambda z, g: g * (z > 0) * (g > 0)  # Springenberg et al. 2015, eq. in fig. 1  # noqa: E731
DECONV = lambda z, g: np.maximum(g, 0)  # Zeiler & Fergus 2014: the reconstruction is rectified  # noqa: E731
TRUE = lambda z, g: g * (z > 0)  # noqa: E731


@pytest.mark.parametrize("method,rule", [("guided_backprop", GUIDED), ("deconvnet", DECONV), ("gradient", TRUE)])
def test_guided_and_deconvnet_match_numpy(method, rule):
    m, ws, bs = mlp()
    x = rng.normal(size=(5, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 1, 0])
    got = Explainer(m).explain(x, method, target=t)
    want = numpy_backward(x.astype(np.float64), ws, bs, t, rule)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_guided_backprop_nonnegative_below_a_relu_stack():
    """Where the input first passes a ReLU, guided backprop's cotangent there is >= 0."""
    m, ws, bs = mlp()
    m.graph.node.insert(0, helper.make_node("Relu", ["x"], ["xr"], name="input_relu"))
    m.graph.node[1].input[0] = "xr"
    x = rng.normal(size=(20, 6)).astype(np.float32)
    a = Explainer(m).explain(x, "guided_backprop")
    assert (a >= 0).all() and (a > 0).any()
    assert (Explainer(m).explain(x, "gradient") < 0).any()


def test_first_match_wins_and_names_and_position(tmp_path):
    """A user file: deconvnet for relu0 by name, guided for every other Relu (listed second)."""
    p = tmp_path / "mixed.toml"
    p.write_text(
        'name = "mixed"\n[[rule]]\nnames = ["relu0"]\nrule = "deconvnet"\n'
        '[[rule]]\nops = ["Relu"]\nrule = "guided"\n'
        '[[rule]]\nops = ["Relu"]\nrule = "deconvnet"\n'
    )
    m, ws, bs = mlp()
    x = rng.normal(size=(4, 6)).astype(np.float32)
    t = np.array([2, 2, 0, 1])
    got = Explainer(m, rules=str(p)).explain(x, "guided_backprop", target=t)
    calls = iter([GUIDED, DECONV])  # numpy_backward visits relu1, then relu0
    want = numpy_backward(x.astype(np.float64), ws, bs, t, lambda z, g: next(calls)(z, g))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_position_first_matches_the_nodes_reading_the_input(tmp_path):
    """x -> Relu -> MLP: deconvnet on the first node (the input Relu), guided on the other ReLUs."""
    p = tmp_path / "first.toml"
    p.write_text(
        'name = "first"\n[[rule]]\nposition = "first"\nrule = "deconvnet"\n[[rule]]\nops = ["Relu"]\nrule = "guided"\n'
    )
    m, ws, bs = mlp()
    m.graph.node.insert(0, helper.make_node("Relu", ["x"], ["xr"], name="input_relu"))
    m.graph.node[1].input[0] = "xr"
    x = rng.normal(size=(30, 6)).astype(np.float32)
    t = rng.integers(0, 3, size=30)
    got = Explainer(m, rules=str(p)).explain(x, "gradient", target=t)
    g_xr = numpy_backward(np.maximum(x, 0).astype(np.float64), ws, bs, t, GUIDED)
    np.testing.assert_allclose(got, np.maximum(g_xr, 0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, GUIDED(x, g_xr), atol=1e-5)  # guided at the input Relu would differ


def test_user_rules_reach_export(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text('name = "g"\n[[rule]]\nops = ["Relu"]\nrule = "guided"\n')
    m, _, _ = mlp()
    g = onnxplain.build(m, "gradient", onnxplain.Options(rules=str(p)))
    onnx.checker.check_model(g, full_check=True)
    assert "onnxplain/g/" in " ".join(n.name for n in g.graph.node)
