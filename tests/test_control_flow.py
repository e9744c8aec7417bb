"""Control flow: If (input-dependent, constant, nested, mid-graph), static Loop and Scan unrolled,
dynamic Loop refused, and the zero-attribution guard.

Models are tests/zoo/if_*.onnx and loop_*.onnx (made by models/zoo/control_flow.py). Gradients are
checked against float64 central differences (tests/oracle.py); each probe states which branch it
takes, read from the model's own condition tensor by the reference evaluator.
"""

import pathlib

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from oracle import check_vjp, gradient_graph, run_ref, to_float64

import onnxplain
from onnxplain.errors import OnnxplainError
from onnxplain.graph.canonicalize import canonicalize
from onnxplain.graph.guard import check_not_silently_zero
from onnxplain.graph.load import load_model

ZOO = pathlib.Path(__file__).parent / "zoo"


def zoo(name: str) -> onnx.ModelProto:
    return load_model(ZOO / f"{name}.onnx")


def probe(shape, kind: str, seed: int = 0) -> np.ndarray:
    """Inputs that pick a branch: 'pos' (mean > 0, max > 1), 'small' (mean > 0, max < 1), 'neg' (mean < 0)."""
    rng = np.random.default_rng(seed)
    if kind == "pos":
        x = np.abs(rng.standard_normal(shape)) + 0.5
    elif kind == "small":
        x = rng.uniform(0.1, 0.8, size=shape)
    else:
        x = -np.abs(rng.standard_normal(shape)) - 0.2
    return x.astype(np.float32)


def values(model, feeds, *names):
    """Intermediate tensors of the float64 model, from the reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    f64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    return ReferenceEvaluator(to_float64(model)).run(list(names), f64)


# (model, probe kind, condition tensors and the values they must take at the probe)
IF_PROBES = [
    ("if_capture", "pos", {"c": True}),
    ("if_capture", "neg", {"c": False}),
    ("if_midgraph", "pos", {"c": True}),
    ("if_midgraph", "neg", {"c": False}),
    ("if_nested", "pos", {"c1": True, "c2": True}),
    ("if_nested", "small", {"c1": True, "c2": False}),
    ("if_nested", "neg", {"c1": False}),
]


@pytest.mark.parametrize("name,kind,conds", IF_PROBES, ids=[f"{n}-{k}" for n, k, _ in IF_PROBES])
def test_if_gradient_matches_finite_differences(name, kind, conds):
    model = zoo(name)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = probe(shape, kind)
    got = values(model, {"x": x}, *conds)
    assert {k: bool(v) for k, v in zip(conds, got)} == conds, "the probe does not take the intended branch"
    for out in [o.name for o in model.graph.output]:
        res = check_vjp(model, {"x": x}, "x", out)
        assert res.error <= 1e-6, f"{name} d{out}/dx: finite-difference error {res.error:.2e}"
        assert res.error_f32 <= 1e-4, f"{name} d{out}/dx: float32 onnxruntime error {res.error_f32:.2e}"
        assert np.abs(res.grad).max() > 1e-3


@pytest.mark.parametrize("name", ["if_capture", "if_midgraph", "if_nested"])
def test_if_explanation_graph_keeps_the_if_and_passes_the_checker(name):
    m = gradient_graph(zoo(name), "x", zoo(name).graph.output[0].name)
    onnx.checker.check_model(m, full_check=True)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("If") >= 2, "expected the forward If and a backward If on the same condition"
    cond = {n.input[0] for n in m.graph.node if n.op_type == "If"}
    assert len(cond) == 1, "the backward If must branch on the forward If's condition"


def test_explainer_on_an_if_model_is_not_zero():
    x = probe([2, 3], "neg")
    w = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    heat = onnxplain.Explainer(ZOO / "if_capture.onnx", probabilities=True).explain(x, target_weights=w)
    m64 = to_float64(zoo("if_capture"))  # its gradient graph is the one checked against finite differences above
    ref = run_ref(gradient_graph(m64, "x", "y"), {"x": x.astype(np.float64), "target_weights": w.astype(np.float64)})
    assert np.abs(heat).max() > 1e-3
    np.testing.assert_allclose(heat, ref["attribution"], rtol=1e-4, atol=1e-5)


# ---- constant conditions, Loop and Scan -------------------------------------------------------


def _ops(model_or_can):
    graph = model_or_can.graph
    return [n.op for n in graph.nodes]


def test_constant_condition_if_is_inlined():
    model = zoo("if_const")
    assert "If" not in _ops(canonicalize(model))
    # without constant folding only the initializer condition is constant: that If goes, the other stays
    ops = _ops(canonicalize(model, fold=False))
    assert ops.count("If") == 1
    x = probe([2, 3], "pos")
    res = check_vjp(model, {"x": x}, "x", "y")
    assert res.error <= 1e-6 and res.error_f32 <= 1e-4
    m64 = to_float64(model)
    opts = onnxplain.Options(input="x", output="y", probabilities=True, target_mode="weights")
    w = np.random.default_rng(0).standard_normal((2, 3))
    unfolded = onnxplain.build(canonicalize(m64, fold=False), "gradient", opts)
    g = run_ref(unfolded, {"x": x.astype(np.float64), "target_weights": w})["attribution"]
    np.testing.assert_allclose(g, check_vjp(model, {"x": x}, "x", "y", seed=0).grad, rtol=1e-9)


@pytest.mark.parametrize("name,op", [("loop_static", "Loop"), ("loop_scan", "Scan")])
def test_static_loop_and_scan_are_unrolled(name, op):
    model = zoo(name)
    assert op not in _ops(canonicalize(model))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    res = check_vjp(model, {"x": x}, "x", "y")
    assert res.error <= 1e-6, f"finite-difference error {res.error:.2e}"
    assert res.error_f32 <= 1e-4
    assert np.abs(res.grad).max() > 1e-3
    onnx.checker.check_model(gradient_graph(model, "x", "y"), full_check=True)


@pytest.mark.parametrize("name", ["loop_static", "loop_scan"])
def test_oracle_loop_and_scan_match_onnxruntime(name):
    """The oracle's Loop/Scan by definition (onnx.reference's own mis-stack / refuse these) agree with
    onnxruntime, so the finite differences above are of the right function."""
    model = zoo(name)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    ref = run_ref(to_float64(model), {"x": x.astype(np.float64)})["y"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(ref, got, rtol=1e-5, atol=1e-5)


def _one_line_error(model, match):
    with pytest.raises(OnnxplainError, match=match) as err:
        gradient_graph(model, "x", "y")
    assert "\n" not in str(err.value)
    return str(err.value)


def test_dynamic_loop_is_refused_in_one_line():
    msg = _one_line_error(zoo("loop_dynamic"), "trip count is only known at run time")
    assert msg.startswith("Loop '")


def _loop_model(trip: int, cond_body: str = "cout = Identity (cin)") -> onnx.ModelProto:
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    big_loop (float[2,3] x) => (float[2,3] y) {{
        M = Constant <value = int64 {{{trip}}}> ()
        cond = Constant <value = bool {{1}}> ()
        y = Loop (M, cond, x) <body = body_g (int64 i, bool cin, float[2,3] v) => (bool cout, float[2,3] vn) {{
            {cond_body}
            vn = Sin (v)
        }}>
    }}"""
    return onnx.parser.parse_model(text)


def test_loop_over_the_unrolling_limit_is_refused():
    msg = _one_line_error(_loop_model(300), "trip count 300 exceeds the unrolling limit 256")
    assert "Loop '" in msg


def test_loop_with_a_computed_condition_is_refused():
    body = "two = Constant <value = int64 {2}> ()\n            cout = Less (i, two)"
    _one_line_error(_loop_model(5, body), "condition is computed at run time")


def test_short_loop_at_the_limit_unrolls():
    model = _loop_model(3)
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    res = check_vjp(model, {"x": x}, "x", "y")
    assert res.error <= 1e-6
    np.testing.assert_allclose(
        run_ref(to_float64(model), {"x": x.astype(np.float64)})["y"],
        np.sin(np.sin(np.sin(x.astype(np.float64)))),
        rtol=1e-12,
    )


def test_deeplift_through_an_input_dependent_if_is_refused():
    with pytest.raises(OnnxplainError, match="If '.*': rule set 'deeplift'"):
        onnxplain.build(zoo("if_capture"), "deeplift", onnxplain.Options(probabilities=True))


# ---- the zero-attribution guard ---------------------------------------------------------------


def _int_cast_model() -> onnx.ModelProto:
    """y = W * float(int(100 x)) / 100: depends on x, but the walker sends no cotangent through int32.
    (Quantisers have a straight-through rule, so they are no blind spot any more.)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    intcast (float[4,16] x) => (float[4,16] y) {
        k = Constant <value = float {100.0}> ()
        inv = Constant <value = float {0.01}> ()
        s = Mul (x, k)
        q = Cast <to = 6> (s)
        f = Cast <to = 1> (q)
        d = Mul (f, inv)
        y = Mul (d, W)
    }"""
    m = onnx.parser.parse_model(text)
    m.graph.initializer.append(
        numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32), "W")
    )
    return m


def test_guard_fires_on_a_silent_zero_and_names_the_node():
    model = _int_cast_model()
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    can = canonicalize(model)
    # the walker's blind spot this guard is for: the Explainer refuses its all-zero gradient
    for method in ("gradient", "integrated_gradients", "lrp_epsilon", "deeplift"):
        with pytest.raises(OnnxplainError, match="identically zero.*carry no gradient: Cast"):
            onnxplain.Explainer(model, probabilities=True).explain(x, method, target_weights=w)
    attribution = np.zeros_like(x)
    with pytest.raises(OnnxplainError, match="carry no gradient: Cast") as err:
        check_not_silently_zero(can, "x", x, w, attribution, output="y")
    assert "\n" not in str(err.value) and "Cast" in str(err.value)


def test_guard_fires_on_a_zero_attribution_for_an_if_model():
    """A zero built on purpose for if_capture, whose output depends on x in both branches."""
    for kind in ("pos", "neg"):
        x = probe([2, 3], kind)
        w = np.random.default_rng(5).standard_normal((2, 3)).astype(np.float32)
        with pytest.raises(OnnxplainError, match="identically zero"):
            check_not_silently_zero(zoo("if_capture"), "x", x, w, np.zeros_like(x), output="y")


def test_guard_works_from_a_session_without_naming_nodes():
    model = zoo("if_capture")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x, w = probe([2, 3], "pos"), np.ones((2, 3), np.float32)
    with pytest.raises(OnnxplainError, match="no graph was given"):
        check_not_silently_zero(sess, "x", x, w, np.zeros_like(x))


def test_guard_is_quiet_when_the_output_does_not_depend_on_x():
    """if_ignores_x: with mean(x) < 0 the else-branch is sin(W), so the zero gradient is right."""
    model = zoo("if_ignores_x")
    x = probe([2, 3], "neg")
    assert not bool(values(model, {"x": x}, "c")[0])
    w = np.random.default_rng(6).standard_normal((2, 3)).astype(np.float32)
    attribution = onnxplain.Explainer(model, probabilities=True).explain(x, target_weights=w)
    assert not np.any(attribution)
    check_not_silently_zero(canonicalize(model), "x", x, w, attribution, output="y")
    # and the other branch, which reads x, gets a true nonzero gradient
    xp = probe([2, 3], "pos")
    assert np.abs(onnxplain.Explainer(model, probabilities=True).explain(xp, target_weights=w)).max() > 1e-3


def test_guard_is_quiet_across_a_branch_switch():
    """A step that flips the If's condition is a jump, not a slope: no false alarm at the boundary."""
    model = zoo("if_ignores_x")
    x = probe([2, 3], "neg")
    x = (x - x.mean() + 1e-4).astype(np.float32)  # mean just above 0: the then-branch, at the edge
    x_else = (x - 2e-4).astype(np.float32)  # just below: the constant else-branch
    assert not bool(values(model, {"x": x_else}, "c")[0])
    w = np.ones((2, 3), np.float32)
    # the guard's first direction (seed 0, step 1e-2 * rms(x)) does cross the boundary
    u = np.random.default_rng(0).standard_normal((2, 3))
    h = 1e-2 * np.sqrt(np.mean(x_else.astype(np.float64) ** 2))
    sides = [bool(values(model, {"x": (x_else + s * h * u).astype(np.float32)}, "c")[0]) for s in (1, -1)]
    assert sides[0] != sides[1]
    check_not_silently_zero(model, "x", x_else, w, np.zeros_like(x_else), output="y")


def test_guard_passes_nonzero_attributions_through_without_running_the_model():
    check_not_silently_zero("no-such-file.onnx", "x", np.ones(3), np.ones(3), np.array([0.0, 1.0, 0.0]))


def test_unsupported_ops_inside_branches_are_listed_before_anything_is_emitted():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) {
        m = ReduceMean <keepdims = 0> (x)
        zero = Constant <value = float {0.0}> ()
        c = Greater (m, zero)
        h = Atan (x)
        y = If (c) <
            then_branch = then_g () => (float[2,3] yt) { yt = Acos (h) },
            else_branch = else_g () => (float[2,3] ye) { ye = Asin (x) }>
    }"""
    with pytest.raises(OnnxplainError) as err:
        gradient_graph(onnx.parser.parse_model(text), "x", "y")
    msg = str(err.value)
    assert "3 node(s)" in msg and all(op in msg for op in ("Atan", "Acos", "Asin"))


def test_scan_with_two_sequences_and_reversed_output_unrolls():
    """Two scan inputs (the second read backwards along axis 0), no state, a scan output stacked in
    reverse on the last axis: unrolled, and its gradient matches finite differences."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3,2] x, float[3,2] z) => (float[2,3] y) {
        y = Scan (x, z) <num_scan_inputs = 2, scan_input_directions = [0, 1], scan_output_directions = [1],
                         scan_output_axes = [-1],
            body = body_g (float[2] a, float[2] b) => (float[2] o) {
                p = Mul (a, b)
                o = Sin (p)
            }>
    }"""
    model = onnx.parser.parse_model(text)
    assert "Scan" not in _ops(canonicalize(model))
    rng = np.random.default_rng(8)
    x, z = (rng.standard_normal((3, 2)).astype(np.float32) for _ in range(2))
    y = run_ref(to_float64(model), {"x": x.astype(np.float64), "z": z.astype(np.float64)})["y"]
    np.testing.assert_allclose(y, np.sin(x * z[::-1]).T[:, ::-1], rtol=1e-6)  # the spec's semantics, in numpy
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["y"], {"x": x, "z": z})[0], y, rtol=1e-5)
    for wrt in ("x", "z"):
        res = check_vjp(model, {"x": x, "z": z}, wrt, "y")
        assert res.error <= 1e-6 and res.error_f32 <= 1e-4


def test_static_loop_whose_body_holds_an_input_dependent_if():
    """Unrolling copies the body's If four times (fresh names each time); each copy gets the If rule."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) {
        M = Constant <value = int64 {4}> ()
        cond = Constant <value = bool {1}> ()
        y = Loop (M, cond, x) <body = body_g (int64 i, bool cin, float[2,3] v) => (bool cout, float[2,3] vn) {
            cout = Identity (cin)
            s = ReduceSum <keepdims = 0> (v)
            zero = Constant <value = float {0.0}> ()
            c = Greater (s, zero)
            vn = If (c) <then_branch = then_g () => (float[2,3] a) { a = Sin (v) },
                         else_branch = else_g () => (float[2,3] e) { q = Mul (v, x)
                                                                     e = Add (q, v) }>
        }>
    }"""
    model = onnx.parser.parse_model(text)
    assert _ops(canonicalize(model)).count("If") == 4
    for seed in (0, 2):  # sum(x) > 0 and < 0: the first iteration takes either branch
        x = np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)
        res = check_vjp(model, {"x": x}, "x", "y")
        assert res.error <= 1e-6 and res.error_f32 <= 1e-4
    onnx.checker.check_model(gradient_graph(model, "x", "y"), full_check=True)
