"""TD(lambda) value targets, as Value Augmented Sampling trains its value function.

`lambda_returns` is the math for one response; `td_rows` puts the returns of every response on
the training rows as per-state targets, which `valuefn.training` regresses to instead of the
reward (training in rounds against a target network: `valuefn.td_rounds`).
"""

from __future__ import annotations

import datasets
import numpy as np

from iro.valuefn.rows import STATE_TARGETS


def lambda_returns(
    values: np.ndarray, reward: float, trace_decay: float, discount: float
) -> np.ndarray:
    """The lambda-return G_t of each state t = 0..T of one response (t = response tokens read).

    The reward R arrives only at the final state T, the state after the response's last token
    (its EOS when it ended). With `values` the target network's V_target at states 0..T:

        G_T = R
        G_t = gamma * ((1 - lambda) * V'(t+1) + lambda * G_{t+1})      for t < T,

    where V'(t) = V_target(t) for t < T and V'(T) = R: the final state is valued at its reward,
    not at the target network's estimate of it (`values[T]` is not read), exactly as
    Monte-Carlo training values it. Unrolled (computed in this form, without a loop):

        G_t = gamma * (1 - lambda) * sum_{k=t+1..T} (gamma * lambda)^(k-t-1) * V'(k)
              + (gamma * lambda)^(T-t) * R.

    lambda = 1 gives the Monte-Carlo return gamma^(T-t) * R (R at every state when gamma = 1);
    lambda = 0 gives one-step bootstrapping G_t = gamma * V'(t+1).
    """
    values = np.asarray(values, dtype=float)
    final = len(values) - 1
    bootstrap = values[1:].copy()  # V'(1..T): the final state valued at R
    bootstrap[-1:] = reward
    t = np.arange(final + 1)[:, None]
    k = np.arange(1, final + 1)[None, :]
    kept = discount * trace_decay
    weights = np.where(k > t, kept ** np.maximum(k - t - 1, 0), 0.0)
    tail = kept ** (final - t[:, 0])
    return discount * (1 - trace_decay) * (weights @ bootstrap) + tail * reward


def td_rows(
    rows: datasets.Dataset, values: list[list[np.ndarray]], trace_decay: float, discount: float
) -> datasets.Dataset:
    """`rows` with `state_targets`: each response's lambda-returns from the target network's
    `values` at its states (`valuefn.training.state_values`) and its reward (`targets`) at the
    end."""
    returns = [
        [
            lambda_returns(v, reward, trace_decay, discount).tolist()
            for v, reward in zip(row_values, rewards, strict=True)
        ]
        for row_values, rewards in zip(values, rows["targets"], strict=True)
    ]
    return rows.add_column(STATE_TARGETS, returns)
