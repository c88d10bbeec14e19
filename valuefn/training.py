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

import torch
from transformers import Trainer, TrainerCallback
from trl import RewardConfig
from trl.trainer.utils import disable_dropout_in_model

from valuefn.encoding import encode_pair
from valuefn.model import TokenValueModel

log = logging.getLogger(__name__)


@dataclass
class ValueExample:
    prompt: str
    response: str
    ended: bool
    reward: float
    weight: float = 1.0


@dataclass
class ValueTrainingArguments(RewardConfig):
    """TRL's reward-model config; `max_length` bounds prompt + response tokens."""

    remove_unused_columns: bool = field(default=False)
    save_strategy: str = field(default="no")
    bf16: bool | None = field(default=False)
    gradient_checkpointing: bool = field(default=False)


class ValueCollator:
    """Tokenise a batch and build per-position targets and the response mask."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, examples: Sequence[ValueExample]) -> dict[str, torch.Tensor]:
        pairs = [
            encode_pair(self.tokenizer, e.prompt, e.response, e.ended, self.max_length)
            for e in examples
        ]
        width = max(len(p.input_ids) for p in pairs)
        input_ids = torch.full((len(pairs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        value_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
        for row, pair in enumerate(pairs):
            n = len(pair.input_ids)
            input_ids[row, :n] = torch.tensor(pair.input_ids)
            attention_mask[row, :n] = 1
            # states y<0 (empty response, read at the last prompt token) .. after the last token
            value_mask[row, pair.prompt_len - 1 : n] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "value_mask": value_mask,
            "targets": torch.tensor([e.reward for e in examples], dtype=torch.float32),
            "weights": torch.tensor([e.weight for e in examples], dtype=torch.float32),
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
        loss = value_regression_loss(
            values, inputs["targets"], inputs["value_mask"], inputs["weights"]
        )
        return (loss, values) if return_outputs else loss


class _LossHistory(TrainerCallback):
    def __init__(self):
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[ValueExample]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ValueExample:
        return self.items[index]


def train_value_model(
    model: TokenValueModel,
    tokenizer,
    examples: Sequence[ValueExample],
    args: ValueTrainingArguments,
) -> dict[str, float]:
    """Train in place; returns loss metrics (first and last logged loss, final mean loss)."""
    if not examples:
        raise ValueError("no training examples for the value model")
    bad = [i for i, e in enumerate(examples) if not math.isfinite(e.reward)]
    if bad:
        raise ValueError(f"non-finite reward in value training example {bad[0]}")
    history = _LossHistory()
    trainer = ValueTrainer(
        model=model,
        args=args,
        train_dataset=_ListDataset(examples),
        data_collator=ValueCollator(tokenizer, args.max_length),
        callbacks=[history],
    )
    result = trainer.train()
    model.eval()
    return {
        "train_loss": float(result.training_loss),
        "first_logged_loss": history.losses[0] if history.losses else float("nan"),
        "last_logged_loss": history.losses[-1] if history.losses else float("nan"),
        "steps": float(result.global_step),
        "examples": float(len(examples)),
    }
