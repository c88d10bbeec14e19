"""How well a value function ranks partial responses: the question a search asks of it.

The search compares the candidates of one prompt after each chunk, so what matters is whether
V at a prefix orders a prompt's candidates as their final rewards do. For each prefix length t
(policy tokens) this measures, over scored responses:

- pairwise accuracy: among pairs of one prompt's candidates whose final rewards differ, the share
  that V(prefix_t) orders the same way (0.5 is chance, and what any constant predictor scores);
- Spearman's rank correlation between V(prefix_t) and the final reward, over all candidates;
- the RMSE of V(prefix_t) against its regression target, next to the RMSE of the best constant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

# (prompt texts, response texts, ended flags) -> one value per candidate
ValueFn = Callable[[Sequence[str], Sequence[str], Sequence[bool]], np.ndarray]


@dataclass(frozen=True)
class PrefixQuality:
    prefix_tokens: int
    pairwise_accuracy: float
    pairs: int
    spearman: float
    rmse: float
    rmse_constant: float


def within_prompt_pairwise_accuracy(
    groups: np.ndarray, predicted: np.ndarray, actual: np.ndarray
) -> tuple[float, int]:
    """Share of same-group pairs with different `actual` that `predicted` orders alike.

    A tie in `predicted` counts half, so a constant predictor scores exactly 0.5.
    """
    agree, pairs = 0.0, 0
    for group in np.unique(groups):
        idx = np.flatnonzero(groups == group)
        p, a = predicted[idx], actual[idx]
        dp = np.sign(p[:, None] - p[None, :])
        da = np.sign(a[:, None] - a[None, :])
        upper = np.triu(np.ones_like(da, dtype=bool), k=1) & (da != 0)
        pairs += int(upper.sum())
        agree += float((dp[upper] == da[upper]).sum() + 0.5 * (dp[upper] == 0).sum())
    return (agree / pairs if pairs else float("nan")), pairs


def prefix_quality(
    value_fn: ValueFn,
    tokenizer,
    groups: Sequence[str],
    prompt_texts: Sequence[str],
    responses: Sequence[str],
    ended: Sequence[bool],
    rewards: np.ndarray,
    targets: np.ndarray,
    prefix_tokens: Sequence[int] = (8, 16, 24),
) -> list[PrefixQuality]:
    """Quality of `value_fn` at each prefix length; `targets` are what it was trained to predict.

    A response shorter than t tokens is read whole (with its end-of-sequence when it ended).
    """
    groups_arr, rewards, targets = np.asarray(groups), np.asarray(rewards), np.asarray(targets)
    ids = [tokenizer(r, add_special_tokens=False).input_ids for r in responses]
    results = []
    for t in prefix_tokens:
        texts = [tokenizer.decode(i[:t], skip_special_tokens=True) for i in ids]
        done = [bool(e) and len(i) <= t for i, e in zip(ids, ended, strict=True)]
        values = np.asarray(value_fn(prompt_texts, texts, done), dtype=np.float64)
        accuracy, pairs = within_prompt_pairwise_accuracy(groups_arr, values, rewards)
        results.append(
            PrefixQuality(
                prefix_tokens=t,
                pairwise_accuracy=accuracy,
                pairs=pairs,
                spearman=float(spearmanr(values, rewards).statistic),
                rmse=float(np.sqrt(np.mean((values - targets) ** 2))),
                rmse_constant=float(np.std(targets)),
            )
        )
    return results
