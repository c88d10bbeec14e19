"""VADER sentiment of the response: the compound score in [-1, 1] (lexicon ships in the wheel)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from iro.reward.base import Reward


class Sentiment(Reward):
    name = "sentiment"

    @cached_property
    def _analyzer(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array(
            [self._analyzer.polarity_scores(r)["compound"] for r in responses], dtype=np.float64
        )
