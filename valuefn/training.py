"""Value regression: V(x, y<t) -> its target at every response position t, and its trainer.

What each state regresses to is read off the row (`valuefn.targets`): the response's reward or
advantage; with a prior (the run's reward read on the prefix) the residual r(x, y) - prior(x, y<t)
at the states where the prior is known; or per-state TD(lambda)-returns (`valuefn.td`). The loss
runs in standardised units (`standardise_targets`), so a learning rate means the same for any
reward's range.

Built on TRL's trainer machinery: `ValueTrainingArguments` extends TRL's `RewardConfig` (its
defaults: dropout disabled, no external loggers, `max_length`), and `ValueTrainer` is a
`transformers.Trainer` (the base of every TRL trainer) with TRL's dropout handling and a per-token
regression loss. TRL's own `RewardTrainer` is not used because its data pipeline and loss are
pairwise (chosen/rejected, Bradley-Terry on the last token); a value function needs a regression
target at every position, masked to the response.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from transformers import PrinterCallback, Trainer, TrainerCallback
from trl import RewardConfig

from iro.valuefn.encoding import encode_group
from iro.valuefn.model import LoraSpec, TokenValueModel
from iro.valuefn.rows import COLUMNS
from iro.valuefn.targets import regression_targets, state_regression

log = logging.getLogger(__name__)

# the trainer's checkpoint directories inside its output_dir; it writes trainer_state.json last
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"

PADDING = -2  # segment id of padding positions; -1 is the prompt, j >= 0 response j


@dataclass
class ValueTrainingArguments(RewardConfig):
    """TRL's reward-model config; `max_length` bounds prompt + response tokens."""

    remove_unused_columns: bool = field(default=False)
    save_strategy: str = field(default="no")
    bf16: bool | None = field(default=False)
    gradient_checkpointing: bool = field(default=False)


class ValueCollator:
    """Pack each row into one sequence: the prompt once, then every response after it.

    Response j attends to the prompt and to its own earlier tokens only, and its positions
    continue the prompt's, so each response is read exactly as if it followed the prompt alone,
    while the prompt, most of the tokens, is read once per row instead of once per response.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups = [
            encode_group(
                self.tokenizer, r["prompt_text"], r["responses"], r["ended"], self.max_length
            )
            for r in rows
        ]
        ids, positions, segments = [], [], []
        for g in groups:
            ids.append(torch.tensor(g.prompt_ids + [t for r in g.response_ids for t in r]))
            prompt_len = len(g.prompt_ids)
            positions.append(
                torch.tensor(
                    [*range(prompt_len)]
                    + [prompt_len + i for r in g.response_ids for i in range(len(r))]
                )
            )
            segments.append(
                torch.tensor(
                    [-1] * prompt_len + [j for j, r in enumerate(g.response_ids) for _ in r]
                )
            )
        pad = torch.nn.utils.rnn.pad_sequence
        input_ids = pad(ids, batch_first=True, padding_value=self.pad_id)
        position_ids = pad(positions, batch_first=True, padding_value=0)
        segment = pad(segments, batch_first=True, padding_value=PADDING)

        order = torch.arange(input_ids.shape[1])
        causal = order[None, :] <= order[:, None]  # (query, key)
        seg_q, seg_k = segment[:, :, None], segment[:, None, :]
        allowed = causal & ((seg_k == -1) | (seg_k == seg_q)) & (seg_k != PADDING)
        allowed |= torch.eye(len(order), dtype=torch.bool) & (seg_q == PADDING)  # no empty rows

        width = max(len(r["responses"]) for r in rows)
        value_mask = torch.zeros((len(rows), width, input_ids.shape[1]), dtype=torch.bool)
        targets = torch.zeros((len(rows), width, input_ids.shape[1]))
        weights = torch.zeros((len(rows), width))
        for b, (row, g) in enumerate(zip(rows, groups, strict=True)):
            empty = len(g.prompt_ids) - 1  # every response's state 0: the last prompt token
            start = empty  # state t > 0 of response j, after its t-th token: at start + t
            for j, response in enumerate(g.response_ids):
                states, values = state_regression(row, j, len(response))
                index = [start + t if t else empty for t in states or range(len(response) + 1)]
                value_mask[b, j, index] = True
                targets[b, j, index] = torch.tensor(values, dtype=torch.float32)
                start += len(response)
            weights[b, : len(g.response_ids)] = torch.tensor(row["weights"], dtype=torch.float32)
        return {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "attention_mask": allowed[:, None],  # (batch, 1, query, key): True = may attend
            "value_mask": value_mask,
            "targets": targets,
            "weights": weights,
        }


def value_regression_loss(
    values: torch.Tensor, targets: torch.Tensor, value_mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """mean_i w_i * mean_{t in states_i} 1/2 (V_t - target_i,t)^2 over every response i.

    `values` (batch, seq); per response: `weights` (batch, responses), its states `value_mask`
    and their `targets` (batch, responses, seq). Each response counts once whatever its length;
    one without states is padding. Weights come from reweighting (mean 1).
    """
    squared = 0.5 * (values[:, None, :] - targets) ** 2
    mask = value_mask.to(values.dtype)
    states = mask.sum(dim=-1)
    per_response = (squared * mask).sum(dim=-1) / states.clamp(min=1)
    return (weights * per_response)[states > 0].mean()


def disable_dropout(model: nn.Module) -> None:
    """Dropout off in the network, but not in LoRA adapters: `disable_dropout` keeps the trunk's
    own dropout out of a regression, while an adapter's dropout is one value.lora asked for."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and ".lora_dropout." not in f".{name}.":
            module.p = 0.0


class SessionSteps(TrainerCallback):
    """What one `train()` call did, observed from the trainer rather than inferred from a
    checkpoint's name: the global step and the optimizer's step count it started from (both
    restored from the checkpoint on a resume, 0 on a fresh start) and the steps it ran."""

    def __init__(self) -> None:
        self.started_at = self.optimizer_started_at = self.ran = 0

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.started_at = state.global_step
        steps = [s["step"] for s in optimizer.state.values() if "step" in s] if optimizer else []
        self.optimizer_started_at = int(max(steps)) if steps else 0

    def on_step_end(self, args, state, control, **kwargs):
        self.ran += 1


class ValueTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.disable_dropout:
            disable_dropout(self.model)
        # the loss history is returned as metrics; printing every log dict only adds noise
        self.remove_callback(PrinterCallback)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        values = model(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"])
        # regress in standardised units, so a learning rate means the same for any reward's range
        scale = self.accelerator.unwrap_model(model).target_scale
        loss = value_regression_loss(
            values / scale, inputs["targets"] / scale, inputs["value_mask"], inputs["weights"]
        )
        return (loss, values) if return_outputs else loss


@torch.no_grad()
def state_values(
    model: TokenValueModel, collator: ValueCollator, rows: datasets.Dataset, batch_size: int
) -> list[list[np.ndarray]]:
    """V at every state 0..T of every response, per row (the model is left in eval mode).

    Read from the training batches themselves, so each value is the one the network is trained
    on at that state (same encoding, packing and truncation).
    """
    model.eval()
    device = next(model.parameters()).device
    plain = [{c: row[c] for c in COLUMNS} for row in rows]  # every state, whatever the row holds
    found: list[list[np.ndarray]] = []
    for start in range(0, len(plain), batch_size):
        chunk = plain[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collator(chunk).items()}
        values = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).cpu()
        mask = batch["value_mask"].cpu()
        found += [
            [values[b][mask[b, j]].numpy() for j in range(len(row["responses"]))]
            for b, row in enumerate(chunk)
        ]
    return found


def standardise_targets(model: TokenValueModel, rows: datasets.Dataset) -> None:
    """Set the head's output affine to the (weighted) mean and spread of the targets."""
    targets, weights = regression_targets(rows)
    mean = float(np.average(targets, weights=weights))
    spread = float(np.sqrt(np.average((targets - mean) ** 2, weights=weights)))
    model.target_mean = mean
    model.target_scale = spread if spread > 1e-8 else 1.0


def _checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint, else None.

    The trainer writes the weights, optimizer, scheduler and RNG state first and
    `trainer_state.json` last, each file whole before the next, so a state file that parses and
    names the directory's own step means the checkpoint was written completely; a kill mid-save
    leaves it missing or cut short.
    """
    match = CHECKPOINT.match(path.name)
    if match is None or not path.is_dir():
        return None
    try:
        step = json.loads((path / TRAINER_STATE).read_text())["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if step == int(match[1]) else None


def resumable_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in `output_dir`, or None; every other one is removed.

    Incomplete ones (a kill mid-save) would be overwritten or rotated badly, and older complete
    ones are superseded. Only for an `output_dir` this code's own trainer wrote: the optimizer,
    scheduler and RNG files are torch pickles (read with `weights_only=True`, still not to be
    trusted from elsewhere).
    """
    found = [(_checkpoint_step(p), p) for p in sorted(Path(output_dir).glob("checkpoint-*"))]
    complete = sorted((step, p) for step, p in found if step is not None)
    newest = complete[-1][1] if complete else None
    for _, path in found:
        if path != newest and path.is_dir():
            shutil.rmtree(path)
            log.info("removed superseded or incomplete value-training checkpoint %s", path)
    return newest


def train_value_model(
    model: TokenValueModel,
    tokenizer,
    rows: datasets.Dataset,
    args: ValueTrainingArguments,
    resume: bool = False,
    lora: LoraSpec | None = None,
) -> dict[str, float]:
    """Train in place on rows with `COLUMNS`; returns loss metrics (in standardised units).

    `resume`: continue from the newest complete checkpoint in `args.output_dir` (weights,
    optimizer, scheduler, RNG state, position in the epoch; `resumable_checkpoint`), so a killed
    training does not start over. The checkpoints must be ones this code wrote there itself.
    `lora`: train fresh adapters on the trunk and the head in full, then merge the adapters into
    the trunk (its checkpoints hold the adapters: resume needs the same `lora`).

    Under torchrun (`iro.valuefn.distributed`) every process calls this; the trainer shards the
    batches and averages the gradients, and process 0 alone prunes the checkpoints.
    """
    if len(rows) == 0:
        raise ValueError("no training examples for the value model")
    missing = [c for c in COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"value training rows lack columns {missing}")
    bad = [i for i, ts in enumerate(rows["targets"]) if not all(math.isfinite(t) for t in ts)]
    if bad:
        raise ValueError(f"non-finite reward in value training row {bad[0]}")
    if not np.isfinite(regression_targets(rows)[0]).all():
        raise ValueError("non-finite prior value or per-state target in the value training rows")
    standardise_targets(model, rows)
    if lora is not None:
        model.add_lora(lora)
    trainer = ValueTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=ValueCollator(tokenizer, args.max_length),
    )
    with args.main_process_first(local=False, desc="pruning value-training checkpoints"):
        checkpoint = resumable_checkpoint(args.output_dir) if resume else None
    if checkpoint is not None:
        log.info("value training resumes from %s", checkpoint)
    session = SessionSteps()
    trainer.add_callback(session)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    model.merge_lora()
    model.eval()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    log.info(
        "value model trained: %d steps (%d before resuming), %.0f s, loss %.3f -> %.3f "
        "(a constant scores 0.5)",
        result.global_step, session.started_at, result.metrics["train_runtime"],
        losses[0] if losses else float("nan"), losses[-1] if losses else float("nan"),
    )  # fmt: skip
    return {
        # the trainer averages over the steps this call trained: after resuming, only the rest
        # (NaN when a resumed training had no step left to run)
        "train_loss": float(result.training_loss) if session.ran else float("nan"),
        "resumed_from_step": float(session.started_at),
        "optimizer_resumed_from_step": float(session.optimizer_started_at),
        "steps_run": float(session.ran),
        "first_logged_loss": losses[0] if losses else float("nan"),
        "last_logged_loss": losses[-1] if losses else float("nan"),
        "steps": float(result.global_step),
        "examples": float(sum(len(r) for r in rows["responses"])),
        "rows": float(len(rows)),
        "target_mean": model.target_mean,
        "target_scale": model.target_scale,
    }
