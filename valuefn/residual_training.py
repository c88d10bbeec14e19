"""Inverse Value Learning: fit the residual by maximum likelihood on demonstrations, base frozen.

The policy log pi = `guided_log_probs(base, r)` is trained like a fine-tuned model would be, on
the response tokens of (prompt, response) demonstrations, but only the residual r learns; the
base runs under no_grad and its weights never change. A norm penalty on the residual's effect
keeps it small, so that it corrects rather than replaces the base it was trained against, and
carries over to other bases.

`ResidualTrainingArguments` extends TRL's `SFTConfig`: the objective is supervised fine-tuning's
(negative log-likelihood of the completion tokens, TRL's completion-only loss), so `max_length`,
the learning rate and the rest mean what they mean for SFT. TRL's `SFTTrainer` itself is not
used: its loss reads one model's logits, and here they are the sum of a frozen base and a trained
residual; the SFT options that reshape that loss or its data (packing, padding-free batches,
DFT, assistant-only loss, loss on the prompt) are refused instead of ignored.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import datasets
import numpy as np
import torch
from transformers import PrinterCallback, Trainer
from trl import SFTConfig

from iro.valuefn.encoding import encode_pair, right_pad
from iro.valuefn.residual import Connection, ResidualValueNetwork, guided_log_probs, residual_delta

log = logging.getLogger(__name__)

COLUMNS = ("prompt_text", "response")  # the prompt as the policy reads it


@dataclass
class ResidualTrainingArguments(SFTConfig):
    """TRL's SFT config; `max_length` bounds prompt + response tokens (the prompt's start is
    cut first)."""

    remove_unused_columns: bool = field(default=False)
    save_strategy: str = field(default="no")
    bf16: bool | None = field(default=False)
    gradient_checkpointing: bool = field(default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        refused = {
            "packing": self.packing,
            "padding_free": self.padding_free,
            "assistant_only_loss": self.assistant_only_loss,
            "completion_only_loss=False": self.completion_only_loss is False,
            f"loss_type={self.loss_type!r}": self.loss_type != "nll",
        }
        if any(refused.values()):
            raise ValueError(
                f"residual training does not implement {[k for k, v in refused.items() if v]}: "
                "its loss is the NLL of the response tokens, one demonstration per row"
            )


class DemonstrationCollator:
    """Prompt + response + EOS, right-padded, with `response_mask` on the response tokens.

    The EOS is part of the response: a demonstration stops there, and the residual learns so.
    """

    def __init__(self, tokenizer, max_length: int | None):
        self.tokenizer = tokenizer
        self.max_length = max_length if max_length is not None else sys.maxsize
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = [
            encode_pair(self.tokenizer, r["prompt_text"], r["response"], True, self.max_length)
            for r in rows
        ]
        input_ids, attention_mask = right_pad([p.input_ids for p in pairs], self.pad_id)
        response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for b, pair in enumerate(pairs):
            response_mask[b, pair.prompt_len : len(pair.input_ids)] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
        }


class ResidualLoss(NamedTuple):
    loss: torch.Tensor
    nll: torch.Tensor
    mean_square_delta: torch.Tensor
    mean_abs_delta: torch.Tensor


def residual_loss(
    base_logits: torch.Tensor,
    residual_logits: torch.Tensor,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    connection: Connection,
    norm_penalty: float,
) -> ResidualLoss:
    """L = -1/|R| sum_{t in R} log pi(y_t | y<t)  +  lambda * 1/(|R| |V|) sum_{t in R, a} delta_t(a)^2

    R: the response tokens of the batch (`response_mask`), each predicted from the position
    before it; pi = `guided_log_probs(base, r)`, delta = `residual_delta(r, connection)` at those
    positions; lambda = `norm_penalty`. A mean over tokens, as SFT takes it. Logits are
    (batch, seq, vocab), `input_ids` and `response_mask` (batch, seq).
    """
    predicted = response_mask[:, 1:].bool()
    if not predicted.any():
        raise ValueError("no response tokens in the batch")
    targets = input_ids[:, 1:][predicted]
    base, residual = base_logits[:, :-1][predicted], residual_logits[:, :-1][predicted]
    log_probs = guided_log_probs(base, residual, connection)
    nll = -log_probs.gather(-1, targets[:, None]).mean()
    delta = residual_delta(residual, connection)
    mean_square = delta.pow(2).mean()
    return ResidualLoss(
        nll + norm_penalty * mean_square, nll, mean_square, delta.detach().abs().mean()
    )


class ResidualTrainer(Trainer):
    """Trains the residual (the trainer's model) against a frozen base read under no_grad; the
    base is moved to the trainer's device and set to eval mode, nothing else about it changes."""

    def __init__(self, *args, base_model: torch.nn.Module, norm_penalty: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.base_model = base_model.to(self.args.device).eval()
        self.norm_penalty = norm_penalty
        self._since_log: dict[str, list[float]] = defaultdict(list)
        # the loss history is returned as metrics; printing every log dict only adds noise
        self.remove_callback(PrinterCallback)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with torch.no_grad():
            base_logits = self.base_model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).logits
        residual_logits = model(inputs["input_ids"], inputs["attention_mask"])
        parts = residual_loss(
            base_logits,
            residual_logits,
            inputs["input_ids"],
            inputs["response_mask"],
            self.accelerator.unwrap_model(model).connection,
            self.norm_penalty,
        )
        for name in ("nll", "mean_square_delta", "mean_abs_delta"):
            self._since_log[name].append(getattr(parts, name).item())
        return (parts.loss, residual_logits) if return_outputs else parts.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Next to each logged loss, its parts averaged over the steps since the last log."""
        if "loss" in logs:
            logs = {**logs, **{k: float(np.mean(v)) for k, v in self._since_log.items()}}
            self._since_log.clear()
        super().log(logs, start_time)


def train_residual(
    residual: ResidualValueNetwork,
    base_model: torch.nn.Module,
    tokenizer,
    rows: datasets.Dataset,
    args: ResidualTrainingArguments,
    norm_penalty: float,
) -> dict[str, float]:
    """Train `residual` in place on rows with `COLUMNS` against the frozen `base_model`.

    The base and the residual read the same token ids (`tokenizer`), so they must share a
    vocabulary; transfer to another vocabulary comes after training (`valuefn.vocab_map`).
    Returns the first and last logged loss and NLL, mean |delta| over the response positions of
    the last logged steps, steps and examples.
    """
    if len(rows) == 0:
        raise ValueError("no demonstrations to train the residual on")
    missing = [c for c in COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"residual training rows lack columns {missing}")
    if norm_penalty < 0:
        raise ValueError(f"norm_penalty must be >= 0, got {norm_penalty}")
    base_vocab = base_model.get_output_embeddings().weight.shape[0]
    if base_vocab != residual.vocab_size:
        raise ValueError(
            f"the residual covers {residual.vocab_size} tokens and the training base {base_vocab}: "
            "train against a base with the residual's vocabulary"
        )
    trainer = ResidualTrainer(
        model=residual,
        args=args,
        train_dataset=rows,
        data_collator=DemonstrationCollator(tokenizer, args.max_length),
        base_model=base_model,
        norm_penalty=norm_penalty,
    )
    result = trainer.train()
    residual.eval()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    first, last = (logged[0], logged[-1]) if logged else ({}, {})
    nan = float("nan")
    log.info(
        "residual trained: %d steps, %.0f s, loss %.3f -> %.3f, mean |delta| %.3f",
        result.global_step, result.metrics["train_runtime"],
        first.get("loss", nan), last.get("loss", nan), last.get("mean_abs_delta", nan),
    )  # fmt: skip
    return {
        "train_loss": float(result.training_loss),
        "first_logged_loss": first.get("loss", nan),
        "last_logged_loss": last.get("loss", nan),
        "first_logged_nll": first.get("nll", nan),
        "last_logged_nll": last.get("nll", nan),
        "mean_abs_delta": last.get("mean_abs_delta", nan),
        "steps": float(result.global_step),
        "examples": float(len(rows)),
    }
