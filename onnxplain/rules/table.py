"""The table of modified rules: ``MODIFIED[name] = (factory, defaults)``.

Rule modules (:mod:`~onnxplain.rules.guided`, :mod:`~onnxplain.rules.lrp`,
:mod:`~onnxplain.rules.deeplift`) register into it with :func:`modified`; the rule-set loader
(:mod:`~onnxplain.rules.ruleset`) imports them and reads it. The true VJPs have their own table,
:data:`onnxplain.rules.vjp.VJP`.
"""

from __future__ import annotations

from collections.abc import Callable

# rule name -> (factory(env, **params) -> rule function, {param: default})
MODIFIED: dict[str, tuple[Callable, dict]] = {}


def modified(name: str, **defaults):
    """Register ``factory(env, **params) -> rule(b, node, g)`` as the modified rule ``name``.

    ``defaults`` lists the rule's parameters and their default values (which also fix the type).
    """

    def register(factory):
        if name in MODIFIED or name == "gradient":
            raise ValueError(f"rule {name} registered twice")
        MODIFIED[name] = (factory, defaults)
        return factory

    return register
