"""Generation for a table of prompts: render them, run the (value-guided) search, one row per
final candidate (the candidate table of iro/core/tables.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from iro.core.config import RunConfig
from iro.core.data import DatasetError, render_prompts
from iro.core.engines.base import Engine
from iro.core.engines.factory import get_engine
from iro.core.errors import out_of_memory
from iro.core.models import resolve_model
from iro.core.tables import candidate_table
from iro.pipeline.guidance import build_scorer, reward_prior
from iro.pipeline.methods import sampling_settings
from iro.valuefn.search import SearchSettings, guided_search

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (message, fraction done)
STAGE = "generation (the search of a rollout or an evaluation)"  # in out-of-memory errors


def policy_tokenizer(cfg: RunConfig):
    from transformers import AutoTokenizer

    path = resolve_model(cfg.policy.model, cfg.cache_dir)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.policy.trust_remote_code)


def memory_knobs(cfg: RunConfig) -> dict[str, tuple[object, str]]:
    """What lowers generation's memory use; none of it changes an artifact id."""
    p = cfg.policy
    return {
        "policy.prompts_per_call": (p.prompts_per_call, "fewer prompts (and their beams) per call"),
        "value.score_batch_size": (cfg.value.score_batch_size, "fewer texts per value forward"),
        "policy.gpu_memory_utilization": (
            p.gpu_memory_utilization,
            "vLLM's share of the GPU, lower to leave the value models room",
        ),
        "policy.cpu_kv_cache_gib": (p.cpu_kv_cache_gib, "vLLM's KV cache in CPU memory"),
    }


@dataclass(frozen=True)
class GenerationJob:
    """What to generate, apart from the config and the prompts: `generate`'s arguments, as one
    value that a Ray actor can be handed."""

    settings: SearchSettings
    value_dirs: tuple[Path, ...]
    seed: int
    guided: bool = True
    prior_only: bool = False
    betas: tuple[float, ...] | None = None


def render(
    cfg: RunConfig, tokenizer, prompts: pd.DataFrame, settings: SearchSettings
) -> tuple[list[str], list[list[int]]]:
    """What the policy reads, as text and token ids; a prompt too long for the policy fails here,
    before any engine (or Ray worker) starts."""
    prompt_texts = render_prompts(tokenizer, cfg.data, prompts["prompt"].tolist())
    prompt_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in prompt_texts]
    limit = cfg.policy.max_model_len - settings.max_new_tokens
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > limit]
    if too_long:  # before the engine starts: a bad prompt costs no engine start-up
        raise DatasetError(
            f"prompt {prompts['id'].iloc[too_long[0]]!r} has {len(prompt_ids[too_long[0]])} tokens; "
            f"policy.max_model_len - sampling.max_new_tokens allows {limit}; shorten the prompt "
            "or raise policy.max_model_len"
        )
    return prompt_texts, prompt_ids


def start_engine(cfg: RunConfig) -> Engine:
    """The policy's engine, started once per process; out of memory names the knobs."""
    with out_of_memory(STAGE, memory_knobs(cfg)):  # vLLM reserves its KV cache as it starts
        return get_engine(cfg.policy, cfg.cache_dir, cfg.seed)


def generate_shard(
    cfg: RunConfig,
    prompts: pd.DataFrame,
    job: GenerationJob,
    progress: Progress | None = None,
    first_index: int = 0,
) -> pd.DataFrame:
    """`generate` in this process, for prompts that start at `first_index` of the whole table:
    the requests' seeds come from the global index, so a shard draws what the whole run would."""
    settings, value_dirs, seed, betas = job.settings, job.value_dirs, job.seed, job.betas
    guided, prior_only = job.guided, job.prior_only
    tokenizer = policy_tokenizer(cfg)
    prompt_texts, prompt_ids = render(cfg, tokenizer, prompts, settings)
    engine = start_engine(cfg)
    task_prompts = dict(zip(prompt_texts, prompts["prompt"], strict=True))
    scorer = build_scorer(cfg, value_dirs, task_prompts, betas) if guided else None
    if prior_only:
        prior = reward_prior(cfg, task_prompts)
        scorer = lambda texts, responses, ended: prior(texts, responses)  # noqa: E731
    started = time.time()

    def on_step(step: int, longest: int) -> None:
        if progress:
            progress(
                f"search step {step}: longest beam {longest} tokens",
                longest / settings.max_new_tokens,
            )

    with out_of_memory(STAGE, memory_knobs(cfg)):
        pools = guided_search(
            engine,
            tokenizer,
            prompt_texts,
            prompt_ids,
            settings,
            sampling_settings(cfg),
            scorer,
            seed=seed,
            progress=on_step,
            prompts_per_call=cfg.policy.prompts_per_call,
            first_index=first_index,
        )
    table = candidate_table(prompts, prompt_texts, pools)
    seconds = time.time() - started
    log.info(
        "generated %d candidates for %d prompts in %.1f s (%.0f new tokens/s, engine %s)",
        len(table), len(prompts), seconds, table["num_tokens"].sum() / max(seconds, 1e-9), engine.name,
    )  # fmt: skip
    return table
