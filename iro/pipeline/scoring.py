"""Reward scoring of candidate tables, and the best-of-U pick by reward."""

from __future__ import annotations

import functools
import json

import pandas as pd

from iro.base.config import RunConfig
from reward import WeightedSum, build_reward


def build_run_reward(cfg: RunConfig) -> WeightedSum:
    """The config's reward, built once per process (loading a reward model takes seconds)."""
    return _cached_reward(
        json.dumps([c.model_dump() for c in cfg.reward.components], sort_keys=True)
    )


@functools.cache
def _cached_reward(components_json: str) -> WeightedSum:
    components = json.loads(components_json)
    return build_reward([(c["type"], c["weight"], c["options"]) for c in components])


def score_table(reward: WeightedSum, table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` with the total `reward` and one `reward_<component>` column per term."""
    total, parts = reward.score_components(table["prompt"].tolist(), table["response"].tolist())
    scored = table.copy()
    scored["reward"] = total
    for name, values in parts.items():
        scored[f"reward_{name}"] = values
    return scored


def best_per_prompt(scored: pd.DataFrame) -> pd.DataFrame:
    """Each prompt's highest-reward candidate (first one on ties): the final best-of-(w*k)."""
    index = scored.groupby("prompt_id", sort=False)["reward"].idxmax()
    return scored.loc[index].reset_index(drop=True)
