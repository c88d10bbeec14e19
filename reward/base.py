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
    try:
        scores = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RewardError(
            f"reward {name!r} returned {type(scores).__name__} that is not an array of numbers "
            f"({err}); a reward returns one float per response"
        ) from None
    if scores.shape != (expected,):
        raise RewardError(
            f"reward {name!r} returned shape {scores.shape}, expected ({expected},): a reward "
            f"returns exactly one score per response ({expected} responses were given)"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        row = int(bad[0])
        raise RewardError(
            f"reward {name!r} returned {scores[row]} for row {row} "
            f"({bad.size} non-finite score(s) in all); nothing was trained on it. Fix the reward "
            "or its options so that every response gets a finite score (an LLM judge gives NaN "
            "when an answer carries no rating or its request failed for good)"
        )
    return scores
