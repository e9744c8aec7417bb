"""Oracle tests for the Einsum VJP (finite differences in float64, float32 in onnxruntime)."""

import numpy as np
import pytest
from oracle import X, assert_case, case, gradient_graph

from onnxplain.errors import OnnxplainError

r = np.random.default_rng(4)
n = r.normal


def ein(eq, *shapes, id, opset=12, **kw):
    return case("Einsum", *[X(n(size=s)) for s in shapes], equation=eq, opset=opset, id=id, **kw)


CASES = [
    ein("bij,bjk->bik", (2, 3, 4), (2, 4, 5), id="batched-matmul"),
    ein("ij->ji", (3, 4), id="transpose"),
    ein("bhid,bhjd->bhij", (2, 2, 3, 4), (2, 2, 5, 4), opset=13, id="attention-scores"),
    ein("i,i->", (5,), (5,), id="dot"),
    ein("...ij,jk->...ik", (2, 3, 4, 5), (5, 2), id="ellipsis-matmul"),
    ein("ij,j->i", (3, 4), (4,), opset=17, id="matvec"),
    ein("ijk->i", (3, 4, 2), id="sum-out-own-letters"),
    ein("ij,kj", (3, 4), (2, 4), id="implicit-output"),
    ein("bij,bjk->bik", (3, 3, 4), (3, 4, 2), dims={"x0": ["N", 3, 4], "x1": ["N", 4, 2]}, id="dynamic-batch"),
    ein("bi,bj->bij", (2, 3), (2, 4), dims={"x0": ["N", 3], "x1": ["N", 4]}, id="outer-dynamic-batch"),
    ein("...i,...i->...", (2, 1, 3), (1, 4, 3), id="ellipsis-broadcast-dot"),
    ein("...ij,ik->...jk", (2, 3, 4), (3, 5), dims={"x0": ["N", 3, 4]}, id="ellipsis-dynamic-batch"),
    ein("ab,bc,cd->ad", (2, 3), (3, 4), (4, 2), id="three-operands"),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


@pytest.mark.parametrize("eq", ["ii->i", "ii->", "bii,bj->bj"])
def test_repeated_letters_are_refused(eq):
    shapes = [(3, 3)] if eq.count(",") == 0 else [(2, 3, 3), (2, 4)]
    c = ein(eq, *shapes, id=eq)
    with pytest.raises(OnnxplainError, match="repeated letters"):
        gradient_graph(c.model, "x0", "y0")
