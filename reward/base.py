"""The reward interface: a batch of (prompt, response) pairs in, one float per response out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class RewardError(ValueError):
    """A reward that cannot be used (NaN, infinite, wrong count); names the offending row."""


class Reward(ABC):
    name: str

    @abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each response to its prompt; `prompts` are the raw task inputs, not chat text."""


def check_scores(name: str, scores: np.ndarray, expected: int) -> np.ndarray:
    """Stop on a score array that would silently poison training."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (expected,):
        raise RewardError(f"reward {name!r} returned shape {scores.shape}, expected ({expected},)")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        row = int(bad[0])
        raise RewardError(
            f"reward {name!r} returned {scores[row]} for row {row} "
            f"({bad.size} non-finite score(s) in all)"
        )
    return scores
