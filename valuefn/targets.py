"""What a value model regresses to, and the training rows that carry it.

Per response, the target is its reward r, or its advantage r - the mean reward of its prompt's
candidates (the search only compares candidates of one prompt, so a per-prompt constant is
capacity spent on nothing). With a reward prior the network learns a residual instead: at the
states where the prior (the run's reward read on the prefix) is known, target - prior. TD(lambda)
rows carry a target per state instead (`valuefn.td`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import pandas as pd

from iro.valuefn.rows import COLUMNS, PRIOR_COLUMNS, STATE_TARGETS, per_response

log = logging.getLogger(__name__)

# (raw task inputs, response texts) -> the run's reward of each
RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]
# per candidate: the states where the prior is known, and its values there
Priors = tuple[list[list[int]], list[list[float]]]


def advantage(table: pd.DataFrame) -> pd.Series:
    """r - the mean reward of all the prompt's scored candidates (`prompt_mean_reward`, which
    reweighting keeps on every row, so it counts the candidates reweighting dropped too)."""
    return table["reward"] - table["prompt_mean_reward"]


def response_targets(table: pd.DataFrame, target: str) -> pd.Series:
    """Each candidate's target: its advantage for `advantage`, else its reward (td_lambda's
    per-state returns are computed from the reward later, `valuefn.td`)."""
    return advantage(table) if target == "advantage" else table["reward"]


def prefix_priors(table: pd.DataFrame, tokenizer, reward: RewardFn, stride: int) -> Priors:
    """Per candidate: the states t = stride, 2*stride, ... and its full length (in the value
    model's tokens), and the reward of the response cut after t tokens, scored in one batch.

    An empty response has the one state t = 0.
    """
    ids = [tokenizer(r, add_special_tokens=False).input_ids for r in table["response"]]
    states = [sorted({*range(stride, len(i), stride), len(i)}) for i in ids]
    prompts = [p for p, s in zip(table["prompt"], states, strict=True) for _ in s]
    texts = [
        tokenizer.decode(i[:t], skip_special_tokens=True)
        for i, s in zip(ids, states, strict=True)
        for t in s
    ]
    started = time.time()
    flat = np.asarray(reward(prompts, texts), dtype=float).tolist()
    log.info("reward prior on %d prefixes of %d responses: %.1f s", len(texts), len(ids),
             time.time() - started)  # fmt: skip
    values, at = [], 0
    for s in states:
        values.append(flat[at : at + len(s)])
        at += len(s)
    return states, values


def value_rows(
    table: pd.DataFrame, target: str, pack: bool, priors: Priors | None = None
) -> datasets.Dataset:
    """Training rows (`valuefn.rows`) from a reweighted table: a prompt and its candidates, with
    the reward or advantage each regresses to (`response_targets`) and its loss weight.

    `pack`: one row per prompt holding all its candidates (the prompt is read once per row);
    otherwise one row per candidate, as the reweighted table has them. `priors`: per candidate,
    states and prior values (`prefix_priors`); the network then regresses the residual there.
    """
    states, values = priors if priors is not None else ([[]] * len(table), [[]] * len(table))
    frame = pd.DataFrame(
        {
            "prompt_text": table["prompt_text"],
            "responses": table["response"],
            "ended": table["ended"].astype(bool),
            "targets": response_targets(table, target).astype(float),
            "weights": table["weight"].astype(float),
            "prior_states": states,
            "prior_values": values,
        }
    )
    if pack:
        frame = frame.groupby("prompt_text", sort=False).agg(list).reset_index()
    else:
        frame = frame.assign(
            **{c: frame[c].map(lambda v: [v]) for c in (*COLUMNS[1:], *PRIOR_COLUMNS)}
        )
    return datasets.Dataset.from_pandas(frame[[*COLUMNS, *PRIOR_COLUMNS]], preserve_index=False)


def state_regression(
    row: dict[str, Any], j: int, length: int | None = None
) -> tuple[list[int] | None, list[float]]:
    """Response j's states that regress (None: all of them) and its target at each (one value
    for all when the states are None): its per-state targets, or with a prior the residual
    target - prior at the prior's states, or else its target. `length`: its tokens, to check
    per-state targets against.
    """
    per_state = per_response(row, STATE_TARGETS)[j]
    states, priors = (per_response(row, c)[j] for c in PRIOR_COLUMNS)
    if per_state and states:
        raise ValueError("a response has both per-state targets and a prior")
    if per_state:
        if length is not None and len(per_state) != length + 1:
            raise ValueError(
                f"{len(per_state)} per-state targets for a response of {length} tokens "
                f"(states 0..{length})"
            )
        return list(range(len(per_state))), list(per_state)
    target = float(row["targets"][j])
    if states:
        return list(states), [target - p for p in priors]
    return None, [target]


def regression_targets(rows: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """What the network regresses to, with weights as the loss counts them: per response its
    target, or its per-state targets, or with a prior the residuals target - prior at its states;
    a response's weight is shared by its values."""
    targets, weights = [], []
    for row in rows:
        for j, weight in enumerate(row["weights"]):
            values = state_regression(row, j)[1]
            targets += values
            weights += [weight / len(values)] * len(values)
    return np.asarray(targets, dtype=float), np.asarray(weights, dtype=float)
