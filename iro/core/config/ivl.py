"""Inverse Value Learning's residual network, trained from demonstrations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iro.core.config.base import EMBEDDED_MODEL, Section
from iro.core.config.value import ValueTrainingConfig


class IVLConfig(Section):
    """Inverse Value Learning: a small causal LM whose output is added to the frozen base's
    logits, log pi(a|s) = log softmax(base(s) + delta(s))[a], learned from demonstrations."""

    backbone: str = Field(EMBEDDED_MODEL, description="the residual network's initial weights")
    num_layers: int | None = Field(4, ge=1, description="keep only the first N layers")
    connection: Literal["logits", "log_probs"] = Field(
        "logits",
        description="logits: delta is added to the base's logits; log_probs: delta is a "
        "normalised log-distribution added to the base's log-probabilities",
    )
    norm_penalty: float = Field(
        0.01, ge=0, description="weight of mean(delta^2): keeps the residual small, for transfer"
    )
    demonstrations: int = Field(512, ge=1, description="training-split prompts with a response")
    response_field: str | None = Field(
        None, description="the dataset's demonstration column; null: data.reference_field"
    )
    train_base: str | None = Field(
        None,
        description="the frozen base the residual is trained against; null: policy.model. "
        "Decoding always adds it to policy.model (transfer when the two differ)",
    )
    max_length: int = Field(
        512,
        ge=16,
        description="longest demonstration the residual trains on, in tokens: prompt plus "
        "response, the prompt's start cut first",
    )
    training: ValueTrainingConfig = Field(
        default_factory=lambda: ValueTrainingConfig(learning_rate=5e-5, num_train_epochs=1)
    )
