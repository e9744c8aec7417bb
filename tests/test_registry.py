"""Every registered VJP has its own oracle test: an op appears in some test module's CASES."""

import importlib
import pathlib

from onnxplain.rules.vjp import load_all

HERE = pathlib.Path(__file__).parent


def _tested_ops() -> set:
    ops = set()
    for path in sorted(HERE.glob("test_*.py")):
        mod = importlib.import_module(path.stem)
        ops.update(c.op for c in getattr(mod, "CASES", []))
    return ops


def test_every_rule_has_an_oracle_case():
    missing = sorted(set(load_all()) - _tested_ops())
    assert not missing, f"VJP rules without an oracle test case: {missing}"
