"""The reward: which components score a response and with what weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from iro.core.config.base import Section


class RewardComponent(Section):
    """One term of the reward: which reward, its weight in the sum and the options it is built
    with."""

    type: Literal[
        "embedding_similarity",
        "length_penalty",
        "hf_classifier",
        "tldr_reward_model",
        "sentiment",
        "llm_judge",
    ] = Field(
        ...,
        description="embedding_similarity: MiniLM cosine similarity of the response and the "
        "prompt; length_penalty: minus per_word for each word beyond target_words; "
        "hf_classifier: a sequence-classification reward model; tldr_reward_model: the paper's "
        "TL;DR reward models; sentiment: VADER's compound score in [-1, 1]; llm_judge: an LLM's "
        "rating from 1 to 10",
    )
    weight: float = Field(
        1.0, description="multiplies this component's score in the sum; negative penalises it"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the component's reward (e.g. length_penalty: "
        "target_words, per_word; hf_classifier, tldr_reward_model, llm_judge: model); one it "
        "does not take is an error naming the component",
    )


class RewardFunctionConfig(Section):
    """The reward: a weighted sum of components (each component's score is kept in the tables)."""

    components: list[RewardComponent] = Field(
        default_factory=lambda: [
            RewardComponent(type="embedding_similarity"),
            RewardComponent(type="length_penalty", weight=1.0, options={"target_words": 12}),
        ],
        min_length=1,
        description="the terms whose weighted scores add up to the reward of a response",
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="rows the reward reads per call when a table is scored; Ray shards of the "
        "score stage break on its multiples",
    )
