"""Tokens each pass of a run generates, prefills, scores and trains on: upper bounds read off
the config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from iro.core.config import RunConfig


@dataclass(frozen=True)
class Work:
    """Tokens one search (or plain sampling) pass and its training touch."""

    label: str
    prompts: int
    samples: int  # per prompt: N plain samples, or U = w*k candidates
    value_models: int
    generated: int
    prefill: int
    value_tokens: int
    reward_tokens: int
    trained_tokens: int = 0


def prompt_tokens(cfg: RunConfig) -> int:
    """The longest prompt a run accepts (longer ones stop it, iro/pipeline/generation.py): an
    upper bound on the prompt length, used for prefill, KV cache and scoring."""
    return cfg.policy.max_model_len - cfg.sampling.max_new_tokens


def _chunk_steps(cfg: RunConfig) -> int:
    chunk = cfg.search.chunk_tokens or cfg.sampling.max_new_tokens
    return math.ceil(cfg.sampling.max_new_tokens / chunk)


def _trained_tokens(cfg: RunConfig, prompts: int, samples: int) -> int:
    """Tokens the value model is trained on: rows kept by the reweighting, times epochs."""
    rows = {"argmax": 1, "softmax": cfg.reweight.resample_size, "weighted": samples}
    per_prompt = rows[cfg.reweight.scheme]
    new, prompt = cfg.sampling.max_new_tokens, prompt_tokens(cfg)
    if cfg.value.pack_candidates:
        tokens = prompt + per_prompt * new
    else:
        tokens = per_prompt * min(prompt + new, cfg.value.max_length)
    return math.ceil(prompts * tokens * cfg.value.training.num_train_epochs)


def search_work(
    cfg: RunConfig, label: str, prompts: int, samples: int, value_models: int, train: bool
) -> Work:
    """Token counts of one pass over `prompts`, each with `samples` candidates of up to
    max_new_tokens (early ends are not predicted: the counts are upper bounds).

    The prompt is prefilled once per prompt (prefix caching shares it among candidates and
    chunks); each value model reads it once and then extends every candidate incrementally; the
    reward reads each final candidate whole, and every candidate at every chunk when it is the
    value's prior (value.prior: reward).
    """
    new, prompt = cfg.sampling.max_new_tokens, prompt_tokens(cfg)
    value_tokens = value_models * prompts * (prompt + samples * new)
    reward_tokens = prompts * samples * (prompt + new)
    if value_models and cfg.value.prior == "reward":
        reward_tokens += prompts * samples * _chunk_steps(cfg) * (prompt + new // 2)
    return Work(
        label=label,
        prompts=prompts,
        samples=samples,
        value_models=value_models,
        generated=prompts * samples * new,
        prefill=prompts * prompt,
        value_tokens=value_tokens,
        reward_tokens=reward_tokens,
        trained_tokens=_trained_tokens(cfg, prompts, samples) if train else 0,
    )


def run_work(cfg: RunConfig) -> tuple[Work, ...]:
    """Iteration 1 samples plainly; iteration k searches with V_1..V_{k-1}; the evaluation runs
    each baseline and iro-iter1..K on the held-out prompts."""
    prompts, budget = cfg.data.prompts_per_iteration, cfg.search.budget_u
    work = [search_work(cfg, "iteration 1", prompts, cfg.rollout.samples, 0, True)]
    for k in range(2, cfg.iterations + 1):
        work.append(search_work(cfg, f"iteration {k}", prompts, budget, k - 1, True))
    if cfg.eval.enabled:
        held_out = cfg.data.eval_prompts
        samples = {"base": 1, "bon": budget}
        for method in cfg.eval.baselines:
            if method in samples:  # args is token-level: not in this model
                label = f"eval {method}" + (f"-{budget}" if method == "bon" else "")
                work.append(search_work(cfg, label, held_out, samples[method], 0, False))
        for k in range(1, cfg.iterations + 1):
            work.append(search_work(cfg, f"eval iro-iter{k}", held_out, budget, k, False))
    return tuple(work)
