"""What is explained: the explained scalar is ``sum(w * output)`` (design notes, "target").

:class:`Target` is what every method's ``run`` receives: one class per batch item (``-1``: the
arg-max) or a weight tensor of the explained output's shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Target:
    classes: np.ndarray | None  # int64 [N]; -1 means the arg-max class
    weights: np.ndarray | None = None  # instead of classes: a seed of the explained output's shape
    given: bool = False  # the user named it (a class or weights), rather than taking the arg-max

    @property
    def mode(self) -> str:
        """The explanation graph's target mode: ``"class"`` or ``"weights"``."""
        return "class" if self.weights is None else "weights"
