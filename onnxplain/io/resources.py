"""Find the packaged rule sets and ``models/`` folders.

* installed wheel: pyproject's force-include puts them inside the package, as
  ``onnxplain/rulesets`` (the checkout's ``rules/``; ``onnxplain/rules`` holds the rule code) and
  ``onnxplain/models``;
* editable install or a source checkout: they live at the repository root, beside the
  ``onnxplain`` package folder.

The package location wins, then the checkout.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
from pathlib import Path

from onnxplain.errors import OnnxplainError

DEMO_MODEL = ("models", "demo", "shapes_cnn.onnx")
DEMO_CARD = ("models", "demo", "MODEL_CARD.md")
SHUFFLED_MODEL = ("models", "demo", "shapes_cnn_shuffled.onnx")  # trained on shuffled labels

_stack = contextlib.ExitStack()
atexit.register(_stack.close)


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The repository root when running from a checkout (it holds pyproject.toml), else None."""
    root = package_dir().parent
    return root if (root / "pyproject.toml").is_file() else None


def _packaged(parts) -> Path | None:
    try:
        res = importlib.resources.files("onnxplain").joinpath(*parts)
    except (ModuleNotFoundError, TypeError):
        return None
    if not res.is_file() and not res.is_dir():
        return None
    if isinstance(res, Path):
        return res
    # a zip or other non-file-system loader: materialise a temporary copy for this process
    return Path(_stack.enter_context(importlib.resources.as_file(res)))


def find(*parts: str, packaged_as: tuple | None = None) -> Path | None:
    """``find("models", "demo", "shapes_cnn.onnx")`` -> the first existing location, or None.

    ``packaged_as`` names the location inside the installed package where it differs from the
    checkout's."""
    hit = _packaged(packaged_as or parts)
    if hit is not None:
        return hit
    root = checkout_root()
    if root is not None and root.joinpath(*parts).exists():
        return root.joinpath(*parts)
    return None


def rules_dir() -> Path | None:
    return find("rules", packaged_as=("rulesets",))


def models_dir() -> Path | None:
    return find("models")


def demo_model(parts=DEMO_MODEL) -> Path:
    """The shipped demo classifier; a one-line error when it is missing from this install."""
    path = find(*parts)
    if path is None or not path.is_file():
        raise OnnxplainError(
            f"the demo model {'/'.join(parts)} is not part of this installation "
            "(looked inside the onnxplain package and in the source checkout)"
        )
    return path


def shuffled_model() -> Path:
    """The demo architecture trained on shuffled labels (data-randomisation sanity check)."""
    return demo_model(SHUFFLED_MODEL)


def demo_card() -> Path | None:
    return find(*DEMO_CARD)
