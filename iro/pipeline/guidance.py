"""The search score of a run: sum_i V_i / beta_i over its value models, plus CBS's implicit reward.

`valuefn.scoring.value_sum` is the one place the sum is computed; this module only loads what a
config names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iro.base.config import RunConfig
from iro.base.models import resolve_model
from valuefn.implicit import ImplicitRewardScorer
from valuefn.scoring import ValueEnsemble
from valuefn.search import Scorer


def build_value_ensemble(cfg: RunConfig, value_dirs: Sequence[Path]) -> ValueEnsemble | None:
    """V_1..V_k, each carrying its own beta_i (value.beta)."""
    if not value_dirs:
        return None
    return ValueEnsemble.load(
        value_dirs,
        cfg.value.betas(len(value_dirs)),
        max_length=cfg.value.max_length,
        batch_size=cfg.value.score_batch_size,
    )


def build_scorer(cfg: RunConfig, value_dirs: Sequence[Path]) -> Scorer | None:
    """sum_i V_i / beta_i over the value models, plus CBS's implicit reward when configured."""
    terms: list[Scorer] = []
    values = build_value_ensemble(cfg, value_dirs)
    if values is not None:
        terms.append(values.score)
    implicit = cfg.search.implicit_reward
    if implicit is not None:
        scorer = ImplicitRewardScorer.load(
            resolve_model(implicit.tuned, cfg.cache_dir),
            resolve_model(implicit.untuned, cfg.cache_dir),
            beta=implicit.beta,
            max_length=cfg.value.max_length,
        )
        terms.append(scorer.score)
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]
    return lambda prompts, responses, ended: sum(t(prompts, responses, ended) for t in terms)
