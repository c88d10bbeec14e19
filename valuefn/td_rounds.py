"""TD(lambda) value training in rounds, each against a target network (a hard update per round).

A round reads V_target at every state with the model as the round starts, computes the
lambda-returns (`valuefn.td`) and trains on them. Each round's subdirectory of the work
directory holds its trainer checkpoints, then its trained weights, then (written atomically,
last) its marker, the round's metrics: a killed process resumes at the first round without a
marker, from the previous round's weights, and within that round from its newest checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from iro.core.fsutil import atomic_write_json
from iro.valuefn.model import TokenValueModel
from iro.valuefn.td import td_rows
from iro.valuefn.training import ValueCollator, state_values

log = logging.getLogger(__name__)

ROUND_MODEL = "model"
ROUND_DONE = "round.json"

# (model, tokenizer, rows, work directory) -> the trained model and its metrics, resuming from
# the checkpoints in that directory
Fit = Callable[
    [TokenValueModel, Any, datasets.Dataset, Path], tuple[TokenValueModel, dict[str, float]]
]


@dataclass(frozen=True)
class TDRounds:
    """`rounds` target-network updates, with lambda `trace_decay` and gamma `discount`."""

    rounds: int
    trace_decay: float
    discount: float


def round_dir(work_dir: Path, r: int) -> Path:
    return work_dir / f"round-{r}"


def finished_rounds(work_dir: Path, rounds: int) -> list[dict[str, float]]:
    """The metrics of rounds 1, 2, ... finished in `work_dir`, up to the first without a marker."""
    done = []
    for r in range(1, rounds + 1):
        marker = round_dir(work_dir, r) / ROUND_DONE
        if not marker.is_file():
            break
        done.append(json.loads(marker.read_text()))
    return done


def train_td_rounds(
    model: TokenValueModel,
    tokenizer,
    rows: datasets.Dataset,
    work_dir: Path,
    td: TDRounds,
    fit: Fit,
    trained: bool,
    max_length: int,
    batch_size: int,
) -> tuple[TokenValueModel, dict[str, float]]:
    """Train on lambda-returns in `td.rounds` rounds; returns the trained model and the last
    round's metrics, each round's as `round_<r>_<key>`, and `rounds_resumed`.

    Round 1's target network is the initial model when it is `trained` (V_{k-1}). A fresh head
    is no value estimate: it gives about one constant at every state (0 before its targets are
    standardised, their mean after), and bootstrapping a constant leaves only lambda^(T-t) of
    the reward in G_t (gamma = 1; 0.95^50 < 8%), so the first rounds would mostly learn the
    constant. Round 1 from a fresh model is therefore Monte-Carlo (lambda = 1, as VAS starts),
    and the later rounds bootstrap from a model that already ranks responses. `max_length` and
    `batch_size` read V_target as training reads its batches.
    """
    done = finished_rounds(work_dir, td.rounds)
    if done:
        model = TokenValueModel.load(round_dir(work_dir, len(done)) / ROUND_MODEL)
        log.info("TD value training resumes after round %d of %d", len(done), td.rounds)
    resumed = len(done)
    collator = ValueCollator(tokenizer, max_length)
    for r in range(resumed + 1, td.rounds + 1):
        trace_decay = td.trace_decay if trained or r > 1 else 1.0
        values = state_values(model, collator, rows, batch_size)
        targets = td_rows(rows, values, trace_decay, td.discount)
        directory = round_dir(work_dir, r)
        model, metrics = fit(model, tokenizer, targets, directory)
        model.save(directory / ROUND_MODEL, tokenizer)
        atomic_write_json(directory / ROUND_DONE, metrics)
        done.append(metrics)
    per_round = {f"round_{r}_{k}": m for r, ms in enumerate(done, 1) for k, m in ms.items()}
    return model, {**done[-1], **per_round, "rounds_resumed": float(resumed)}
