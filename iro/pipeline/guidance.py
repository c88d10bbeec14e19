"""The search score of a run: sum_i V_i / beta_i over its value models, plus CBS's implicit reward.

`ValueEnsemble.combine` is the one place the sum is computed; this module only loads what a
config names, and the reward prior that residual value models add (value.prior = reward).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from iro.core.compat import check_value_models
from iro.core.config import RunConfig
from iro.core.models import resolve_model
from iro.pipeline.scoring import build_run_reward
from iro.valuefn.implicit import ImplicitRewardScorer
from iro.valuefn.scoring import Prior, ValueEnsemble
from iro.valuefn.search import Scorer


def reward_prior(cfg: RunConfig, task_prompts: Mapping[str, str]) -> Prior:
    """The run's reward of partial responses, for prompts given as the policy read them.

    `task_prompts` maps each rendered prompt text to its raw task input, which the reward reads.
    """
    reward = build_run_reward(cfg)

    def prior(prompt_texts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return reward.score([task_prompts[p] for p in prompt_texts], responses)

    return prior


def compose(
    groups: Sequence[tuple[Sequence[Path], Sequence[float], float]],
) -> tuple[list[Path], list[float]]:
    """Value models of several runs (each trained for its own reward) as one guide.

    Group j is (its value models, their betas beta_ji, a strength s_j chosen per request), and
    the guide is sum_j s_j * sum_i V_ji / beta_ji, VAS's composition of rewards at decoding time:
    raising s_j pulls the output towards run j's reward, s_j = 0 leaves it out. Returned as one
    list of value models with betas beta_ji / s_j, so that `ValueEnsemble.combine` forms the sum.
    """
    dirs: list[Path] = []
    betas: list[float] = []
    for group_dirs, group_betas, strength in groups:
        if strength < 0:
            raise ValueError(f"a composition strength must be >= 0, got {strength}")
        if strength > 0:
            dirs += list(group_dirs)
            betas += [beta / strength for beta in group_betas]
    return dirs, betas


def build_value_ensemble(
    cfg: RunConfig,
    value_dirs: Sequence[Path],
    task_prompts: Mapping[str, str] | None = None,
    betas: Sequence[float] | None = None,
    device: str | None = None,
) -> ValueEnsemble | None:
    """V_1..V_k, each carrying its own beta_i (`betas`, default value.beta); with `task_prompts`,
    the reward prior that value models trained on one (value.prior = reward) add to their
    residual. They score on `device` (default value.score_device)."""
    if not value_dirs:
        return None
    check_value_models(value_dirs, cfg.value.backbone)  # refuse another run's value models early
    return ValueEnsemble.load(
        value_dirs,
        cfg.value.betas(len(value_dirs)) if betas is None else betas,
        max_length=cfg.value.max_length,
        batch_size=cfg.value.score_batch_size,
        prior=reward_prior(cfg, task_prompts) if task_prompts is not None else None,
        score_dtype=getattr(torch, cfg.value.score_dtype),
        device=device or cfg.value.score_device,
    )


def build_scorer(
    cfg: RunConfig,
    value_dirs: Sequence[Path],
    task_prompts: Mapping[str, str],
    betas: Sequence[float] | None = None,
) -> Scorer | None:
    """sum_i V_i / beta_i over the value models, plus CBS's implicit reward when configured."""
    terms: list[Scorer] = []
    values = build_value_ensemble(cfg, value_dirs, task_prompts, betas)
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
