"""VJP of Einsum.

y = einsum("s_1, .., s_n -> s_y", x_1, .., x_n) is linear in each operand, and its transpose is
again an einsum: dx_i = einsum("s_y, s_1, .. (all but s_i) .. -> s_i", g, x_j...). Letters of s_i
that occur in no other term were summed out of x_i alone; the einsum cannot produce them, so the
result is unsqueezed there and expanded back to x_i's shape. The ellipsis broadcasts like numpy:
its dimensions that x_i lacks (because another operand had more) are summed, those where x_i has
size 1 are summed with keepdims, and those that x_i has but the result lacks are expanded.

Repeated letters within one term (diagonals, traces) are not supported.
"""

from __future__ import annotations

import re

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import rank, static_shape
from onnxplain.rules.vjp import attr, vjp

ELL = "..."


def parse(equation: str, n: int):
    """(input terms, output term), each a list of letters and at most one "..."."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = [re.findall(r"\.\.\.|[A-Za-z]", t) for t in lhs.split(",")]
    if len(terms) != n or any("".join(t) != s for t, s in zip(terms, lhs.split(","))):
        raise OnnxplainError(f"cannot parse the Einsum equation '{equation}'")
    if "->" in eq:
        out = re.findall(r"\.\.\.|[A-Za-z]", rhs)
    else:  # implicit mode: the ellipsis, then the letters used once, in alphabetical order
        letters = [c for t in terms for c in t if c != ELL]
        out = ([ELL] if any(ELL in t for t in terms) else []) + sorted(c for c in set(letters) if letters.count(c) == 1)
    return terms, out


def _term(t):
    return "".join(t)


@vjp("Einsum")
def einsum(b, node, g):
    """dx_i = einsum(g, x_j for j != i -> s_i), expanded over the letters only x_i had."""
    eq = attr(node, "equation")
    eq = eq.decode() if isinstance(eq, bytes) else eq
    xs = list(node.inputs)
    terms, out = parse(eq, len(xs))
    for t in terms:
        letters = [c for c in t if c != ELL]
        if len(set(letters)) != len(letters):
            raise OnnxplainError(
                f"Einsum '{node.name}': repeated letters within one operand ('{eq}': diagonals "
                "or traces) are not supported"
            )
    if any(ELL in t and rank(x) is None for x, t in zip(xs, terms)):
        raise ShapeError(f"Einsum '{node.name}': operands with '...' need a known rank")
    ell = [(rank(x) - len(t) + 1) if ELL in t else 0 for x, t in zip(xs, terms)]
    e_out = max(ell) if ELL in out else 0
    grads = []
    for i, (x, t) in enumerate(zip(xs, terms)):
        others = [(out, e_out, g[0])] + [(terms[j], ell[j], xs[j]) for j in range(len(xs)) if j != i]
        seen = {c for term, _, _ in others for c in term}
        missing = [c for c in t if c != ELL and c not in seen]
        # onnxruntime wants "..." in the output whenever an input has one: keep it, sum it later
        n_res = max([e for term, e, _ in others if ELL in term], default=None)
        res_term = ([ELL] if n_res is not None and ELL not in t else []) + [
            c for c in t if c not in missing and (c != ELL or n_res is not None)
        ]
        ins = [term for term, _, _ in others]
        if len(ins) == 1 and ins[0] == res_term:
            res = g[0]
        else:
            lhs = ",".join(_term(term) for term in ins)
            res = b.Einsum(*[tensor for _, _, tensor in others], equation=f"{lhs}->{_term(res_term)}")
        grads.append(_to_operand(b, res, x, t, missing, ell[i], n_res or 0, ELL in out))
    return grads


def _to_operand(b, res, x, t, missing, e_x, n_res, out_has_ell):
    """Bring the einsum result to x's shape. ``res`` is laid out as ``t`` without the missing
    letters, its ellipsis (``n_res`` dimensions, placed first if ``t`` has none) in place of x's
    (``e_x`` dimensions)."""
    p = sum(1 for c in t[: t.index(ELL)] if c not in missing) if ELL in t else 0
    if n_res > e_x:  # x's ellipsis was broadcast up to more leading dimensions, or x has none
        res = b.reduce("ReduceSum", res, list(range(p, p + n_res - e_x)), keepdims=False)
    elif n_res < e_x:
        res = b.unsqueeze(res, list(range(p, p + e_x - n_res)))
    layout = []
    for c in t:
        layout += ["."] * e_x if c == ELL else [c]
    if missing:
        res = b.unsqueeze(res, [k for k, c in enumerate(layout) if c in missing])
    xs = static_shape(x)
    if e_x and xs is not None:  # ellipsis axes where x has size 1 but the result may not
        ones = [k for k, c in enumerate(layout) if c == "." and xs[k] == 1]
        if ones:
            res = b.reduce("ReduceSum", res, ones, keepdims=True)
    if missing or (e_x and not out_has_ell):
        res = b.Expand(res, b.ints(xs) if xs is not None else b.Shape(x))
    return res
