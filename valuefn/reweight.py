"""Reweight scored candidates into the training set of the next value function.

Within each prompt, the target distribution is pi_base * exp(r / beta); the candidates were drawn
from the current policy, so self-normalised weights w_i = softmax(r_i / beta) over the prompt's
candidates approximate it. Three ways to use them (docs/method.md):

- argmax: keep the best candidate per prompt (the official code);
- softmax: draw `resample_size` candidates per prompt with probability w_i;
- weighted: keep every candidate, with loss weight n * w_i (mean weight 1 per prompt).

ESS = (sum w)^2 / sum w^2 per prompt says how degenerate the weights are (1 = one candidate
dominates, n = uniform). Every kept row also carries `prompt_mean_reward`, the mean reward of all
its prompt's candidates, so that a value model can regress to the advantage r - mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def softmax_weights(rewards: np.ndarray, beta: float) -> np.ndarray:
    logits = np.asarray(rewards, dtype=np.float64) / beta
    logits -= logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


def effective_sample_size(weights: np.ndarray) -> float:
    weights = np.asarray(weights, dtype=np.float64)
    return float(weights.sum() ** 2 / np.square(weights).sum())


def reweight(
    scored: pd.DataFrame, scheme: str, beta: float, resample_size: int, seed: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """`scored` has one row per candidate with `prompt_id` and `reward`; returns rows + metrics.

    The returned frame keeps the candidate columns and adds `weight` (the loss weight).
    """
    if scored.empty:
        raise ValueError("cannot reweight an empty candidate table")
    rng = np.random.default_rng(seed)
    kept, ess = [], []
    for _, group in scored.groupby("prompt_id", sort=False):
        weights = softmax_weights(group["reward"].to_numpy(), beta)
        ess.append(effective_sample_size(weights))
        if scheme == "argmax":
            # first maximum: deterministic on ties
            rows = group.iloc[[int(np.argmax(group["reward"].to_numpy()))]].assign(weight=1.0)
        elif scheme == "softmax":
            picks = rng.choice(len(group), size=resample_size, replace=True, p=weights)
            rows = group.iloc[np.sort(picks)].assign(weight=1.0)
        elif scheme == "weighted":
            rows = group.assign(weight=weights * len(group))
        else:
            raise ValueError(f"unknown reweighting scheme {scheme!r}")
        kept.append(rows.assign(prompt_mean_reward=float(group["reward"].mean())))
    table = pd.concat(kept, ignore_index=True)
    metrics = {
        "ess_mean": float(np.mean(ess)),
        "ess_min": float(np.min(ess)),
        "candidates_per_prompt": float(len(scored) / scored["prompt_id"].nunique()),
        "training_rows": float(len(table)),
        "kept_reward_mean": float(np.average(table["reward"], weights=table["weight"])),
        "all_reward_mean": float(scored["reward"].mean()),
    }
    return table, metrics
