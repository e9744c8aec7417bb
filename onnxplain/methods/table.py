"""The method table: every attribution method is one :class:`Method` entry.

An entry says what a method is (name, aliases, family, kind, the map it returns, its paper), which
options it takes (:class:`Option`: name, type, default, range, help) and how it runs: one calling
convention for every kind,

    run(explainer, x, target, options, progress) -> Explanation

with ``x`` the checked input batch, ``target`` a :class:`~onnxplain.targets.Target`, ``options``
a dict of every option of the method (validated, defaults filled in) and ``progress`` an optional
``callback(done, total)``. :meth:`Explainer.run`, the CLI's options and help, the README's method
table, "did you mean" and option validation all read this table; adding a method is one module
plus one entry in :data:`METHODS` (see :mod:`onnxplain.methods.catalog`).

Kinds (Captum's uniform ``attribute()`` and pytorch-grad-cam's ``BaseCAM`` are the models):

* ``graph``: a head on the backward graph; one run of the explanation graph gives the map, and
  ``onnxplain export`` can save it;
* ``looped``: the gradient graph run over copies of the input (IG's path, SmoothGrad's noise),
  driven from Python; exported graphs hold the copies as a batch;
* ``forward``: forward passes of the model with an inner layer's channels masked (no gradient);
* ``black-box``: forward passes on perturbed inputs only;
* ``optimised``: a perturbation mask optimised with the gradient graph.

Maps are ``signed`` (diverging colours), ``non-negative`` (sequential) or ``offset``: non-negative
values around a baseline that carries no information (RISE's mean score, a mask's kept area).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxplain.errors import OnnxplainError

KINDS = ("graph", "looped", "forward", "black-box", "optimised")
MAPS = ("signed", "non-negative", "offset")


def _key(name: str) -> str:
    """Spelling-insensitive key: ``GradCAM``, ``grad-cam`` and ``grad_cam`` are one method."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass(frozen=True)
class Option:
    """One option of a method: its name (the API keyword; the CLI flag is ``--name-with-dashes``)."""

    name: str
    type: type  # int, float, str or object (an API-only value, such as an array)
    default: Any
    help: str
    min: float | None = None  # inclusive bounds for numbers
    max: float | None = None
    above: float | None = None  # exclusive lower bound (``p`` in (0, 1])
    choices: tuple = ()  # allowed strings (str options) or allowed words beside a number (``fill``)
    nullable: bool = False  # ``None`` is a valid value (it means: the default behaviour)
    check: Callable | None = None  # extra conversion/validation: value -> value (raises OnnxplainError)
    cli: bool = True  # exposed as a command-line option

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, method: str, value, cli: bool = False):
        """The value converted to the option's type; one-line error naming method and option (its flag
        on the command line)."""
        where = f"{self.flag} ({method})" if cli else f"option '{self.name}' of {method}"
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise OnnxplainError(f"{where} needs a value")
        if self.check is not None:
            return self.check(where, value)
        if self.type is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise OnnxplainError(f"{where} must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if self.type in (int, float):
            if self.choices and isinstance(value, str) and value in self.choices:
                return value
            return self._number(where, value)
        return value

    def _number(self, where: str, value):
        words = f" or one of {', '.join(self.choices)}" if self.choices else ""
        try:
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
        except (TypeError, ValueError):
            raise OnnxplainError(f"{where} must be a number{words}, not {value!r}") from None
        if not math.isfinite(v):
            raise OnnxplainError(f"{where} must be finite, not {value!r}")
        if self.type is int:
            if v != int(v):
                raise OnnxplainError(f"{where} must be an integer, not {value!r}")
            v = int(v)
        if self.min is not None and v < self.min:
            raise OnnxplainError(f"{where} must be at least {self.min:g}, not {value!r}")
        if self.max is not None and v > self.max:
            raise OnnxplainError(f"{where} must be at most {self.max:g}, not {value!r}")
        if self.above is not None and v <= self.above:
            raise OnnxplainError(f"{where} must be above {self.above:g}, not {value!r}")
        return v


#: options every method takes
COMMON = (Option("batch_size", int, 16, "items (or perturbed copies) per onnxruntime call", min=1),)


@dataclass(frozen=True)
class Method:
    """One attribution method; see the module docstring for the fields' meaning."""

    name: str
    family: str
    kind: str
    map: str
    summary: str
    paper: str
    run: Callable
    options: tuple = ()
    aliases: tuple = ()
    shape: str = "the input's"  # the attribution's shape, in words
    head: Callable | None = None  # graph and looped kinds: the in-graph head, ``head(ctx) -> (tensor, shape)``

    def __post_init__(self):
        assert self.kind in KINDS and self.map in MAPS, self.name

    @property
    def exportable(self) -> bool:
        return self.head is not None

    @property
    def signed(self) -> bool:
        return self.map == "signed"

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options + COMMON if o.name == name), None)

    def takes(self, shared: dict) -> dict:
        """The part of ``shared`` this method takes: for callers that apply one setting (a seed, a step
        count) to many methods at once. A single method's own options go through :meth:`settings`."""
        return {k: v for k, v in shared.items() if self.option(k) is not None}

    def settings(self, given: dict, cli: bool = False) -> dict:
        """Every option of this method, ``given`` ones validated, the rest at their defaults."""
        unknown = [k for k in given if self.option(k) is None]
        if unknown:
            raise OnnxplainError(_unknown_options(self, unknown))
        return {
            o.name: o.validate(self.name, given[o.name], cli) if o.name in given else o.default
            for o in self.options + COMMON
        }


@dataclass
class Table:
    """The methods in order, with lookup by name or alias."""

    methods: tuple
    _index: dict = field(default_factory=dict)

    def __post_init__(self):
        for m in self.methods:
            for n in (m.name, *m.aliases):
                k = _key(n)
                assert k not in self._index, f"method name {n} used twice"
                self._index[k] = m

    def __iter__(self):
        return iter(self.methods)

    def __contains__(self, name) -> bool:
        return _key(name) in self._index

    def names(self, kind: str | None = None) -> tuple:
        return tuple(m.name for m in self.methods if kind is None or m.kind == kind)

    def get(self, name: str) -> Method:
        """The method called ``name`` (any spelling or alias); a one-line error with suggestions otherwise."""
        hit = self._index.get(name) if isinstance(name, str) else None  # a key already (keys are their own key)
        if hit is None:
            hit = self._index.get(_key(name))
        if hit is not None:
            return hit
        close = difflib.get_close_matches(_key(name), list(self._index), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(dict.fromkeys(self._index[c].name for c in close))}?" if close else ""
        raise OnnxplainError(f"unknown method '{name}'{hint} (choose from: {', '.join(self.names())})")

    def option_names(self) -> dict:
        """Option name -> the methods that take it (common options excluded)."""
        out: dict = {}
        for m in self.methods:
            for o in m.options:
                out.setdefault(o.name, []).append(m.name)
        return out


def _unknown_options(method: Method, names) -> str:
    from onnxplain.methods.catalog import METHODS

    parts = []
    takers = METHODS.option_names()
    own = [o.name for o in method.options + COMMON]
    for n in names:
        close = difflib.get_close_matches(n, own, n=1)
        if close:
            parts.append(f"'{n}' (did you mean '{close[0]}'?)")
        elif n in takers:
            parts.append(f"'{n}' (an option of {', '.join(takers[n][:4])}{', ...' if len(takers[n]) > 4 else ''})")
        else:
            parts.append(f"'{n}'")
    takes = ", ".join(own)
    return f"{method.name} does not take {', '.join(parts)}; it takes: {takes}"


# ---- value checks shared by several options -----------------------------------------------------------
def finite_array(where: str, value):
    """A float number or array with only finite values (baselines)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise OnnxplainError(f"{where} must be a number or a float array, not {type(value).__name__}") from None
    if not np.all(np.isfinite(a)):
        raise OnnxplainError(f"{where} contains NaN or infinite values")
    return value


def markdown(table: Table) -> str:
    """The README's method table, generated from :data:`METHODS` so that it cannot drift."""
    rows = ["| method | family | kind | map | options | paper |", "|---|---|---|---|---|---|"]
    for m in table:
        names = f"`{m.name}`" + (f" ({', '.join(f'`{a}`' for a in m.aliases)})" if m.aliases else "")
        opts = ", ".join(f"`{o.name}`" for o in m.options) or "-"
        rows.append(f"| {names} | {m.family} | {m.kind} | {m.map} | {opts} | {m.paper} |")
    return "\n".join(rows)
