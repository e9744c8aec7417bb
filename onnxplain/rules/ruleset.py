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

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import tomllib

from onnxplain.errors import OnnxplainError, os_message
from onnxplain.rules import attnlrp, deeplift, guided, lrp  # noqa: F401  (they register into MODIFIED)
from onnxplain.rules.table import MODIFIED, modified
from onnxplain.rules.vjp import Rule, load_all

_TOP_KEYS = {"name", "description", "base", "rule"}
_MATCH_KEYS = {"ops", "names", "position"}
_POSITIONS = {"first"}
MAX_FILE_BYTES = 1 << 20  # a rule set is a few hundred bytes; refuse files that are not one
MAX_DEPTH = 16  # TOML nesting ([[rule]] and its lists need 2)
MAX_NUMBER = 1e30  # rule parameters (epsilon, gamma, alpha, ...) are small numbers
MAX_PATTERN = 1000


@dataclass
class Env:
    """What modified rules may read besides their node; filled by the method head and the walker."""

    x: object = None  # the explained input tensor
    first: set = field(default_factory=set)  # names of the nodes that read the explained input
    fwd: set = field(default_factory=set)  # names of tensors on the explained path (set by the walker)
    ref: dict = field(default_factory=dict)  # DeepLIFT: tensor name -> its value on the baseline
    ref_one: bool = False  # DeepLIFT: the baseline pass is one item, broadcast over the batch

    def on_path(self, t) -> bool:
        return t.name in self.fwd


@dataclass
class Entry:
    rule: str
    params: dict
    ops: frozenset | None = None
    names: list | None = None
    position: str | None = None

    _hits: dict = field(default_factory=dict, repr=False)  # node name -> matches ``names`` (once per name)

    def matches(self, node, env: Env) -> bool:
        if self.ops is not None and node.op not in self.ops:
            return False
        if self.names is not None:
            name = node.name or ""
            if name not in self._hits:
                self._hits[name] = any(p.fullmatch(name) for p in self.names)
            if not self._hits[name]:
                return False
        return not (self.position == "first" and node.name not in env.first)


@dataclass
class RuleSet:
    """A parsed rule-set file. :meth:`bind` gives the object the walker asks for rules."""

    name: str
    path: str
    description: str = ""
    entries: list = field(default_factory=list)

    def bind(self, env: Env) -> BoundRules:
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
                    self._made[key] = Rule(factory(self.env, **entry.params), bool(true and true.broadcast), entry.rule)
                return self._made[key]
        return self.vjp.get(node.op)


def load_ruleset(path: str | Path) -> RuleSet:
    """Parse and validate a rule-set file; every error names the file and the key."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise OnnxplainError(f"rule-set file {where} does not exist")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise OnnxplainError(
                f"{where}: a rule-set file of {path.stat().st_size} bytes is too large (at most {MAX_FILE_BYTES})"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OnnxplainError(f"{where}: cannot read it ({os_message(exc)})") from None
    except UnicodeDecodeError:
        raise OnnxplainError(f"{where}: not valid TOML (not UTF-8 text)") from None
    depth = _nesting(text)
    if depth > MAX_DEPTH:
        raise OnnxplainError(
            f"{where}: not valid TOML for a rule set (arrays or tables nested {depth} deep; at most {MAX_DEPTH})"
        )
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError, OverflowError) as exc:
        reason = " ".join(str(exc).split()) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise OnnxplainError(f"{where}: not valid TOML ({reason})") from None
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
    return RuleSet(
        name=data.get("name", path.stem), path=where, description=data.get("description", ""), entries=entries
    )


def _entry(table, where: str, modified_rules: dict) -> Entry:
    if not isinstance(table, dict):
        raise OnnxplainError(f"{where}: must be a table")
    if "rule" not in table:
        raise OnnxplainError(f"{where}: missing key 'rule'")
    name = table["rule"]
    if name != "gradient" and name not in modified_rules:
        raise OnnxplainError(
            f"{where}: rule: unknown rule '{name}' (known: gradient, {', '.join(sorted(modified_rules))})"
        )
    defaults = {} if name == "gradient" else modified_rules[name][1]
    params = dict(defaults)
    for key, value in table.items():
        if key in _MATCH_KEYS or key == "rule":
            continue
        if key not in defaults:
            allowed = sorted(_MATCH_KEYS | {"rule"} | set(defaults))
            raise OnnxplainError(f"{where}: unknown key '{key}' for rule '{name}' (allowed: {', '.join(allowed)})")
        want = type(defaults[key])
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            raise OnnxplainError(f"{where}: {key}: {str(value)[:20]}... is too large (at most {MAX_NUMBER:g})")
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool) != isinstance(defaults[key], bool):
            raise OnnxplainError(f"{where}: {key}: expected {want.__name__}, got {type(value).__name__}")
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_NUMBER):
            raise OnnxplainError(
                f"{where}: {key}: must be a finite number of at most {MAX_NUMBER:g} in size, not {value}"
            )
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
        entry.names = [_regex(p, where) for p in pats]
    if "position" in table:
        if table["position"] not in _POSITIONS:
            raise OnnxplainError(f"{where}: position: expected one of {sorted(_POSITIONS)}")
        entry.position = table["position"]
    return entry


def _nesting(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text`` (strings included: an upper bound), without recursion."""
    depth = most = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            most = max(most, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return most


def _regex(pattern: str, where: str):
    """A node-name pattern, compiled by RE2 (linear time: a pattern cannot hang on a name the model chose).

    Without the ``google-re2`` package, Python's ``re`` is used and patterns that can backtrack
    exponentially (a quantified group that contains a quantifier, backreferences) are refused."""
    if len(pattern) > MAX_PATTERN:
        raise OnnxplainError(
            f"{where}: names: a pattern of {len(pattern)} characters is too long (at most {MAX_PATTERN})"
        )
    re2 = _re2()
    if re2 is not None:
        options = re2.Options()
        options.log_errors = False
        try:
            return re2.compile(pattern, options)
        except Exception as exc:  # noqa: BLE001 -- re2.error
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise OnnxplainError(
                f"{where}: names: bad regular expression {pattern!r} ({reason}; patterns use RE2 "
                "syntax: no backreferences or lookarounds)"
            ) from None
    if re.search(r"\\[1-9]|\(\?[=!<]|\(\?P=", pattern) or re.search(r"\([^()]*[*+}][^()]*\)\s*[*+{]", pattern):
        raise OnnxplainError(
            f"{where}: names: pattern {pattern!r} needs a backtracking engine (a repeated group "
            "that repeats, a backreference or a lookaround) and could hang on a node name; "
            "install google-re2 or simplify it"
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise OnnxplainError(f"{where}: names: bad regular expression ({exc})") from None


def _re2():
    try:
        import re2
    except ImportError:
        return None
    return re2


def builtin_ruleset(method: str) -> RuleSet:
    """The shipped rule set of ``method`` (``rules/<method>.toml``)."""
    from onnxplain.io.resources import rules_dir

    folder = rules_dir()
    path = None if folder is None else folder / f"{method}.toml"
    if path is None or not path.is_file():
        raise OnnxplainError(f"no rule set for method '{method}' in this installation")
    return load_ruleset(path)


__all__ = ["Env", "RuleSet", "BoundRules", "MODIFIED", "modified", "load_ruleset", "builtin_ruleset", "Rule"]
