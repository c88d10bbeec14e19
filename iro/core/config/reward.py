"""The reward: which components score a response and with what weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from iro.core.config.base import Section


class RewardComponent(Section):
    type: Literal[
        "embedding_similarity",
        "length_penalty",
        "hf_classifier",
        "tldr_reward_model",
        "sentiment",
        "llm_judge",
    ]
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)


class RewardFunctionConfig(Section):
    """The reward: a weighted sum of components (each component's score is kept in the tables)."""

    components: list[RewardComponent] = Field(
        default_factory=lambda: [
            RewardComponent(type="embedding_similarity"),
            RewardComponent(type="length_penalty", weight=1.0, options={"target_words": 12}),
        ],
        min_length=1,
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="rows the reward reads per call when a table is scored; Ray shards of the "
        "score stage break on its multiples",
    )
