"""Methods whose backward rules differ from the true gradient, chosen by a rule set (rules/).

* ``guided_backprop`` and ``deconvnet``: the walker's output at the input is the attribution.
"""

from __future__ import annotations


def _rule_gradient(method):
    def head(ctx):
        return ctx.backward(rules=ctx.rules(method)), ctx.x.shape

    head.__name__ = method
    return head


HEADS = {m: _rule_gradient(m) for m in ("guided_backprop", "deconvnet")}
