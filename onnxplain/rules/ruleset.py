"""Rule sets as data: which backward rule each node gets, one TOML file per method in ``rules/``.

A file looks like::

    name = "lrp_epsilon"
    description = "LRP-epsilon (Bach et al. 2015) on every layer linear in its input"
    base = "gradient"                 # nodes no entry matches get their true VJP

    [[rule]]                          # entries are tried in order; the first match wins
    ops = ["Conv", "Gemm"]            # match by op type ...
    names = ["^/features/0/.*"]       # ... and/or node-name regexes (full match) ...
    position = "first"                # ... and/or "first": the nodes that read the explained input
    rule = "epsilon"                  # a rule from MODIFIED, or "gradient"
    epsilon = 1e-6                    # the rule's parameters

Files are validated when loaded; every error names the file and the key. Like PyTorch's
``derivatives.yaml`` and Zennit's composites, the mapping is data; the rules are code, one
short factory each, registered with :func:`onnxplain.rules.table.modified`.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from onnxplain.errors import OnnxplainError
from onnxplain.rules import attnlrp, deeplift, guided, lrp  # noqa: F401  (they register into MODIFIED)
from onnxplain.rules.table import MODIFIED, modified
from onnxplain.rules.vjp import Rule, load_all

_TOP_KEYS = {"name", "description", "base", "rule"}
_MATCH_KEYS = {"ops", "names", "position"}
_POSITIONS = {"first"}


@dataclass
class Env:
    """What modified rules may read besides their node; filled by the method head and the walker."""

    x: object = None  # the explained input tensor
    first: set = field(default_factory=set)  # names of the nodes that read the explained input
    fwd: set = field(default_factory=set)  # names of tensors on the explained path (set by the walker)
    ref: dict = field(default_factory=dict)  # DeepLIFT: tensor name -> its value on the baseline

    def on_path(self, t) -> bool:
        return t.name in self.fwd


@dataclass
class Entry:
    rule: str
    params: dict
    ops: frozenset | None = None
    names: list | None = None
    position: str | None = None

    def matches(self, node, env: Env) -> bool:
        if self.ops is not None and node.op not in self.ops:
            return False
        if self.names is not None and not any(p.fullmatch(node.name or "") for p in self.names):
            return False
        if self.position == "first" and node.name not in env.first:
            return False
        return True


@dataclass
class RuleSet:
    """A parsed rule-set file. :meth:`bind` gives the object the walker asks for rules."""

    name: str
    path: str
    description: str = ""
    entries: list = field(default_factory=list)

    def bind(self, env: Env) -> "BoundRules":
        return BoundRules(self, env)


class BoundRules:
    """The walker's view of a rule set: ``lookup(node) -> Rule | None`` with the first match."""

    def __init__(self, ruleset: RuleSet, env: Env):
        self.ruleset, self.env, self.name = ruleset, env, ruleset.name
        self.vjp = load_all()
        self._made: dict[int, Rule] = {}

    def start(self, fwd: set) -> None:
        self.env.fwd = fwd

    def lookup(self, node) -> Rule | None:
        """The first matching entry's rule; modified rules share the op's broadcast handling."""
        for i, entry in enumerate(self.ruleset.entries):
            if entry.matches(node, self.env):
                if entry.rule == "gradient":
                    return self.vjp.get(node.op)
                key = (i, node.op)
                if key not in self._made:
                    factory, _ = MODIFIED[entry.rule]
                    true = self.vjp.get(node.op)
                    self._made[key] = Rule(factory(self.env, **entry.params), bool(true and true.broadcast),
                                           entry.rule)
                return self._made[key]
        return self.vjp.get(node.op)


def load_ruleset(path: str | Path) -> RuleSet:
    """Parse and validate a rule-set file; every error names the file and the key."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise OnnxplainError(f"rule-set file {where} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OnnxplainError(f"{where}: not valid TOML ({exc})") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise OnnxplainError(f"{where}: unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(_TOP_KEYS))})")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise OnnxplainError(f"{where}: '{key}' must be a string")
    if data.get("base", "gradient") != "gradient":
        raise OnnxplainError(f"{where}: 'base' must be \"gradient\" (the true VJP of each op)")
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise OnnxplainError(f"{where}: 'rule' must be an array of tables ([[rule]])")
    modified_rules = MODIFIED
    entries = [_entry(r, f"{where}: rule[{i}]", modified_rules) for i, r in enumerate(rules)]
    return RuleSet(name=data.get("name", path.stem), path=where, description=data.get("description", ""),
                   entries=entries)


def _entry(table, where: str, modified_rules: dict) -> Entry:
    if not isinstance(table, dict):
        raise OnnxplainError(f"{where}: must be a table")
    if "rule" not in table:
        raise OnnxplainError(f"{where}: missing key 'rule'")
    name = table["rule"]
    if name != "gradient" and name not in modified_rules:
        raise OnnxplainError(f"{where}: rule: unknown rule '{name}' (known: gradient, "
                             f"{', '.join(sorted(modified_rules))})")
    defaults = {} if name == "gradient" else modified_rules[name][1]
    params = dict(defaults)
    for key, value in table.items():
        if key in _MATCH_KEYS or key == "rule":
            continue
        if key not in defaults:
            allowed = sorted(_MATCH_KEYS | {"rule"} | set(defaults))
            raise OnnxplainError(f"{where}: unknown key '{key}' for rule '{name}' (allowed: {', '.join(allowed)})")
        want = type(defaults[key])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool) != isinstance(defaults[key], bool):
            raise OnnxplainError(f"{where}: {key}: expected {want.__name__}, got {type(value).__name__}")
        params[key] = value
    if not _MATCH_KEYS & set(table):
        raise OnnxplainError(f"{where}: give at least one of ops, names, position")
    entry = Entry(rule=name, params=params)
    if "ops" in table:
        ops = table["ops"]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise OnnxplainError(f"{where}: ops: expected a list of op types")
        typos = [o for o in ops if not onnx.defs.has(o)]
        if typos:
            raise OnnxplainError(f"{where}: ops: '{typos[0]}' is not an ONNX op type")
        entry.ops = frozenset(ops)
    if "names" in table:
        pats = table["names"]
        if not isinstance(pats, list) or not all(isinstance(p, str) for p in pats):
            raise OnnxplainError(f"{where}: names: expected a list of regular expressions")
        try:
            entry.names = [re.compile(p) for p in pats]
        except re.error as exc:
            raise OnnxplainError(f"{where}: names: bad regular expression ({exc})") from None
    if "position" in table:
        if table["position"] not in _POSITIONS:
            raise OnnxplainError(f"{where}: position: expected one of {sorted(_POSITIONS)}")
        entry.position = table["position"]
    return entry


def builtin_ruleset(method: str) -> RuleSet:
    """The shipped rule set of ``method`` (``rules/<method>.toml``)."""
    from onnxplain.io.resources import rules_dir

    folder = rules_dir()
    path = None if folder is None else folder / f"{method}.toml"
    if path is None or not path.is_file():
        raise OnnxplainError(f"no rule set for method '{method}' in this installation")
    return load_ruleset(path)


__all__ = ["Env", "RuleSet", "BoundRules", "MODIFIED", "modified", "load_ruleset", "builtin_ruleset", "Rule"]
