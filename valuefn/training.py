"""Monte-Carlo value regression: V(x, y<t) -> r(x, y) at every response position t.

Built on TRL's trainer machinery: `ValueTrainingArguments` extends TRL's `RewardConfig` (its
defaults: dropout disabled, no external loggers, `max_length`), and `ValueTrainer` is a
`transformers.Trainer` (the base of every TRL trainer) with TRL's dropout handling and a per-token
regression loss. TRL's own `RewardTrainer` is not used because its data pipeline and loss are
pairwise (chosen/rejected, Bradley-Terry on the last token); a value function needs a regression
target at every position, masked to the response.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from transformers import Trainer
from trl import RewardConfig
from trl.trainer.utils import disable_dropout_in_model

from valuefn.encoding import encode_pair
from valuefn.model import TokenValueModel

log = logging.getLogger(__name__)

# The columns of a value-training set: what the value model reads and the target it regresses to.
COLUMNS = ("prompt", "response", "ended", "target", "weight")


@dataclass
class ValueTrainingArguments(RewardConfig):
    """TRL's reward-model config; `max_length` bounds prompt + response tokens."""

    remove_unused_columns: bool = field(default=False)
    save_strategy: str = field(default="no")
    bf16: bool | None = field(default=False)
    gradient_checkpointing: bool = field(default=False)


class ValueCollator:
    """Tokenise a batch of rows and build per-position targets and the response mask."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = [
            encode_pair(self.tokenizer, r["prompt"], r["response"], r["ended"], self.max_length)
            for r in rows
        ]
        input_ids = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(p.input_ids) for p in pairs], batch_first=True, padding_value=self.pad_id
        )
        lengths = torch.tensor([len(p.input_ids) for p in pairs])
        positions = torch.arange(input_ids.shape[1])
        attention_mask = (positions[None, :] < lengths[:, None]).long()
        # states y<0 (empty response, read at the last prompt token) .. after the last token
        starts = torch.tensor([p.prompt_len - 1 for p in pairs])
        value_mask = (positions[None, :] >= starts[:, None]) & attention_mask.bool()
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "value_mask": value_mask,
            "targets": torch.tensor([r["target"] for r in rows], dtype=torch.float32),
            "weights": torch.tensor([r["weight"] for r in rows], dtype=torch.float32),
        }


def value_regression_loss(
    values: torch.Tensor, targets: torch.Tensor, value_mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """mean_i w_i * mean_{t in response_i} 1/2 (V_it - r_i)^2.

    Each sequence counts once whatever its length; weights come from reweighting (mean 1).
    """
    squared = 0.5 * (values - targets[:, None]) ** 2
    mask = value_mask.to(values.dtype)
    per_sequence = (squared * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return (weights * per_sequence).mean()


class ValueTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.disable_dropout:
            disable_dropout_in_model(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        values = model(inputs["input_ids"], inputs["attention_mask"])
        scale = model.target_scale  # regress in standardised units: the lr means the same always
        loss = value_regression_loss(
            values / scale, inputs["targets"] / scale, inputs["value_mask"], inputs["weights"]
        )
        return (loss, values) if return_outputs else loss


def standardise_targets(model: TokenValueModel, rows: datasets.Dataset) -> None:
    """Set the head's output affine to the (weighted) mean and spread of the targets."""
    targets, weights = np.asarray(rows["target"]), np.asarray(rows["weight"])
    mean = float(np.average(targets, weights=weights))
    spread = float(np.sqrt(np.average((targets - mean) ** 2, weights=weights)))
    model.target_mean = mean
    model.target_scale = spread if spread > 1e-8 else 1.0


def train_value_model(
    model: TokenValueModel,
    tokenizer,
    rows: datasets.Dataset,
    args: ValueTrainingArguments,
) -> dict[str, float]:
    """Train in place on rows with `COLUMNS`; returns loss metrics (in standardised units)."""
    if len(rows) == 0:
        raise ValueError("no training examples for the value model")
    missing = [c for c in COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"value training rows lack columns {missing}")
    bad = [i for i, t in enumerate(rows["target"]) if not math.isfinite(t)]
    if bad:
        raise ValueError(f"non-finite reward in value training example {bad[0]}")
    standardise_targets(model, rows)
    trainer = ValueTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=ValueCollator(tokenizer, args.max_length),
    )
    result = trainer.train()
    model.eval()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "train_loss": float(result.training_loss),
        "first_logged_loss": losses[0] if losses else float("nan"),
        "last_logged_loss": losses[-1] if losses else float("nan"),
        "steps": float(result.global_step),
        "examples": float(len(rows)),
        "target_mean": model.target_mean,
        "target_scale": model.target_scale,
    }
