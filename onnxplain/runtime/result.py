"""The result of one explanation: :class:`Explanation`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Explanation:
    attribution: np.ndarray  # raw; the explained input's shape (saliency and CAMs: one channel)
    target: np.ndarray | None  # the class explained for each item (class mode)
    outputs: dict  # the model's own outputs for x, plus what the method adds (layer maps, segments, ...)
