"""Reward scoring of candidate tables, and the best-of-U pick by reward."""

from __future__ import annotations

import functools
import json
from collections import defaultdict

import numpy as np
import pandas as pd

from iro.core.config import RunConfig
from iro.reward import WeightedSum, build_reward


def build_run_reward(cfg: RunConfig) -> WeightedSum:
    """The config's reward, built once per process (loading a reward model takes seconds)."""
    return _cached_reward(
        json.dumps([c.model_dump() for c in cfg.reward.components], sort_keys=True)
    )


@functools.cache
def _cached_reward(components_json: str) -> WeightedSum:
    components = json.loads(components_json)
    return build_reward([(c["type"], c["weight"], c["options"]) for c in components])


def score_table(reward: WeightedSum, table: pd.DataFrame, rows_per_call: int) -> pd.DataFrame:
    """A copy of `table` with the total `reward` and one `reward_<component>` column per term.

    The reward reads `rows_per_call` rows at a time (reward.batch_size): a reward model's
    batches, and so its rounding, are then the same whether one process scores the table or Ray
    workers score shards that break on those multiples.
    """
    totals, parts = [], defaultdict(list)
    for start in range(0, len(table), rows_per_call):
        rows = table.iloc[start : start + rows_per_call]
        total, terms = reward.score_components(rows["prompt"].tolist(), rows["response"].tolist())
        totals.append(total)
        for name, values in terms.items():
            parts[name].append(values)
    scored = table.copy()
    scored["reward"] = np.concatenate(totals) if totals else np.zeros(0)
    for name, values in parts.items():
        scored[f"reward_{name}"] = np.concatenate(values)
    return scored


def best_per_prompt(scored: pd.DataFrame) -> pd.DataFrame:
    """Each prompt's highest-reward candidate (first one on ties): the final best-of-(w*k)."""
    index = scored.groupby("prompt_id", sort=False)["reward"].idxmax()
    return scored.loc[index].reset_index(drop=True)
