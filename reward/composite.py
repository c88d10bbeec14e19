"""A weighted sum of rewards (as VAS composes them), keeping each component's score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iro.core.cost import count_reward_calls
from iro.reward.base import Reward, check_scores


class WeightedSum(Reward):
    name = "weighted_sum"

    def __init__(self, components: Sequence[tuple[Reward, float]]):
        if not components:
            raise ValueError("a weighted sum needs at least one reward component")
        self.components = list(components)

    def score_components(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Total score and each component's unweighted score, checked for NaN/inf."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        count_reward_calls(len(responses))
        parts: dict[str, np.ndarray] = {}
        total = np.zeros(len(responses))
        for reward, weight in self.components:
            scores = check_scores(reward.name, reward.score(prompts, responses), len(responses))
            parts[reward.name] = scores
            total += weight * scores
        return total, parts

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.score_components(prompts, responses)[0]
