"""Layer-wise relevance propagation heads (rules/<method>.toml picks each node's LRP rule).

The relevance at the top is R = seed * logits: in class mode the explained logit at its own
position, so the relevances sum to that logit where every rule conserves (as in Captum's LRP).
The walker carries relevance down; the attribution is the relevance arriving at the input.

* ``lrp_0`` / ``lrp_epsilon`` — LRP-0 and LRP-epsilon on every linear layer (Bach et al. 2015);
* ``lrp_epsilon_plus`` — epsilon on dense layers, z+ on convolutions (Zennit's EpsilonPlus);
* ``lrp_epsilon_plus_flat`` — the same with the flat rule on the first layer (EpsilonPlusFlat);
* ``lrp_epsilon_gamma_box`` — z^B first layer, gamma convolutions, epsilon dense (EpsilonGammaBox);
* ``lrp_epsilon_alpha2_beta1`` — alpha=2, beta=1 convolutions, epsilon dense (EpsilonAlpha2Beta1).
"""

from __future__ import annotations

METHODS = (
    "lrp_0",
    "lrp_epsilon",
    "lrp_epsilon_plus",
    "lrp_epsilon_plus_flat",
    "lrp_epsilon_gamma_box",
    "lrp_epsilon_alpha2_beta1",
)


SUMMARIES = {
    "lrp_0": "LRP-0 on every layer linear in its input",
    "lrp_epsilon": "LRP-epsilon on every layer linear in its input",
    "lrp_epsilon_plus": "epsilon on dense layers, z+ on convolutions",
    "lrp_epsilon_plus_flat": "epsilon-plus with the flat rule on the first layer",
    "lrp_epsilon_gamma_box": "z^B on the first layer, gamma on convolutions, epsilon on dense layers",
    "lrp_epsilon_alpha2_beta1": "alpha=2, beta=1 on convolutions, epsilon on dense layers",
}


def _lrp(method):
    def head(ctx):
        top = ctx.b.Mul(ctx.seed, ctx.logits)
        return ctx.backward(seed=top, rules=ctx.rules(method)), ctx.x.shape

    head.__name__ = method
    return head


HEADS = {m: _lrp(m) for m in METHODS}
