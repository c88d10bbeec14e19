"""A conciseness term: zero up to `target_words`, then minus `per_word` for each extra word."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iro.reward.base import Reward


class LengthPenalty(Reward):
    name = "length_penalty"

    def __init__(self, target_words: int = 12, per_word: float = 0.02):
        if target_words < 0 or per_word < 0:
            raise ValueError("length_penalty needs target_words >= 0 and per_word >= 0")
        self.target_words = target_words
        self.per_word = per_word

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        words = np.array([len(r.split()) for r in responses], dtype=np.float64)
        return -self.per_word * np.maximum(0.0, words - self.target_words)
