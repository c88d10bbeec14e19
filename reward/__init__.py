"""Rewards behind one interface, built from the run config."""

from __future__ import annotations

from iro.reward.base import Reward, RewardError, check_scores
from iro.reward.composite import WeightedSum
from iro.reward.embedding import EmbeddingSimilarity
from iro.reward.hf_classifier import SequenceClassifierReward
from iro.reward.length import LengthPenalty
from iro.reward.llm_judge import LLMJudgeReward
from iro.reward.sentiment import Sentiment
from iro.reward.tldr import TLDRRewardModel

__all__ = [
    "EmbeddingSimilarity",
    "LLMJudgeReward",
    "LengthPenalty",
    "Reward",
    "RewardError",
    "Sentiment",
    "SequenceClassifierReward",
    "TLDRRewardModel",
    "WeightedSum",
    "build_reward",
    "check_scores",
]

REWARD_TYPES: dict[str, type[Reward]] = {
    "embedding_similarity": EmbeddingSimilarity,
    "length_penalty": LengthPenalty,
    "hf_classifier": SequenceClassifierReward,
    "tldr_reward_model": TLDRRewardModel,
    "sentiment": Sentiment,
    "llm_judge": LLMJudgeReward,
}


def build_reward(components: list[tuple[str, float, dict]]) -> WeightedSum:
    """Build the weighted sum from (type, weight, options) triples; bad options name the type."""
    built = []
    for type_name, weight, options in components:
        try:
            built.append((REWARD_TYPES[type_name](**options), weight))
        except TypeError as err:
            raise ValueError(f"reward {type_name!r}: bad options {options}: {err}") from None
    return WeightedSum(built)
