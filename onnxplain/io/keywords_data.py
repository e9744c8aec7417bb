"""The keyword task of the demo text transformer (models/demo/keyword_bert.onnx): evidence at a known position.

Each sequence is [CLS] then 15 tokens: random filler ids with exactly one keyword at a random position
1..15; keyword ``KEYWORDS[k]`` decides class ``k``. Pad id 0 replaces tokens in perturbation metrics.
"""

from __future__ import annotations

import numpy as np

VOCAB = 40
PAD, CLS = 0, 1
KEYWORDS = (2, 3, 4)  # keyword k decides class k - 2
FILLER = (5, VOCAB)  # filler token ids are drawn from [5, 40)
SEQ = 16


def make_keywords(n: int, seed: int = 0):
    """``n`` sequences [CLS, t_1, ..., t_15]: random filler tokens with one keyword at a random position
    1..15; returns (ids int64 [n, 16], labels int64 [n], keyword positions int64 [n])."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(FILLER[0], FILLER[1], size=(n, SEQ)).astype(np.int64)
    ids[:, 0] = CLS
    labels = rng.integers(0, len(KEYWORDS), size=n).astype(np.int64)
    pos = rng.integers(1, SEQ, size=n).astype(np.int64)
    ids[np.arange(n), pos] = np.asarray(KEYWORDS)[labels]
    return ids, labels, pos
