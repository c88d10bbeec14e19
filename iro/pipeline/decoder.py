"""One decoder over every method of `methods.METHODS`: prompts in, one response per prompt out.

base, bon, iro and specrej run the chunk search on the configured engine (vLLM by default); bon,
iro and specrej pick the final candidate by reward (iro may pick by value instead:
decode.final_pick). vas, args and ivl need the policy's logits at every step and run on
transformers with KV caches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from iro.core.config import RunConfig
from iro.core.data import render_prompts
from iro.core.methods import get_method
from iro.core.tables import candidate_table
from iro.pipeline import ivl
from iro.pipeline.execution import generate, score_rows
from iro.pipeline.generation import Progress
from iro.pipeline.guidance import build_value_ensemble
from iro.pipeline.methods import search_settings
from iro.pipeline.scoring import best_per_prompt, build_run_reward
from iro.valuefn.search import Candidate
from iro.valuefn.token_guidance import (
    GuidedPrompt,
    RewardShift,
    TokenGuidanceSettings,
    ValueShift,
)
from iro.valuefn.token_guidance import decode as decode_guided

log = logging.getLogger(__name__)
NAN = float("nan")  # token-level decoders keep no search score


def _pick(cfg: RunConfig, method: str, candidates: pd.DataFrame) -> pd.DataFrame:
    if method == "base" or (method == "iro" and cfg.decode.final_pick == "value"):
        # pools come ranked by value, best first (base has one candidate)
        return candidates[candidates["candidate"] == 0].reset_index(drop=True)
    return best_per_prompt(score_rows(cfg, candidates))


def _token_level(
    cfg: RunConfig,
    method: str,
    prompts: pd.DataFrame,
    guide_dirs: Sequence[Path],
    seed: int,
    betas: Sequence[float] | None,
) -> pd.DataFrame:
    from iro.core.engines.hf_engine import HFEngine
    from iro.core.models import resolve_model

    d = cfg.decode
    engine = HFEngine(
        resolve_model(cfg.policy.model, cfg.cache_dir),
        dtype=cfg.policy.dtype,
        trust_remote_code=cfg.policy.trust_remote_code,
    )
    tokenizer = engine.tokenizer
    texts = render_prompts(tokenizer, cfg.data, prompts["prompt"].tolist())
    guided = [
        GuidedPrompt(tokenizer(text, add_special_tokens=False).input_ids, raw, text, seed + i)
        for i, (raw, text) in enumerate(zip(prompts["prompt"], texts, strict=True))
    ]
    if method == "ivl":
        seeds = [p.seed for p in guided]
        outputs = ivl.decode(engine.model, tokenizer, guide_dirs[0], texts, cfg, seeds)
    else:
        if method == "vas":
            # beside the transformers policy, which runs on the CPU
            ensemble = build_value_ensemble(cfg, guide_dirs, betas=betas, device="cpu")
            if ensemble is None:
                raise ValueError("method 'vas' needs at least one value model")
            scorer = ValueShift(ensemble, d.guidance_beta, tokenizer)
        else:
            scorer = RewardShift(build_run_reward(cfg), d.args_weight, tokenizer)
        settings = TokenGuidanceSettings(
            top_k=d.token_top_k,
            max_new_tokens=cfg.sampling.max_new_tokens,
            temperature=cfg.sampling.temperature,
            greedy=d.greedy,
        )
        outputs = decode_guided(
            engine.model, engine.eos_token_id, guided, scorer, settings, engine.batch_size
        )
    pools = [
        [
            Candidate(
                tuple(response), tokenizer.decode(response, skip_special_tokens=True), ended, NAN
            )
        ]
        for response, ended in outputs
    ]
    return candidate_table(prompts, texts, pools)


def check_guides(cfg: RunConfig, method: str, value_dirs: Sequence[Path]) -> None:
    """Refuse a method without what guides it (value models, or IVL's one residual) before any
    model is loaded."""
    spec = get_method(method)
    if spec.uses_values and not value_dirs and cfg.search.implicit_reward is None:
        raise ValueError(f"method {method!r} needs at least one value model")
    if spec.uses_residual and len(value_dirs) != 1:
        raise ValueError(f"method {method!r} needs its residual model")


def decode(
    cfg: RunConfig,
    prompts: pd.DataFrame,
    method: str,
    value_dirs: Sequence[Path],
    seed: int,
    progress: Progress | None = None,
    betas: Sequence[float] | None = None,
) -> pd.DataFrame:
    """One response per prompt (a candidate table, plus reward where picked by it).

    `value_dirs`: the value models guiding (iro, vas), with `betas` (default value.beta); for
    ivl, its residual model.
    """
    check_guides(cfg, method, value_dirs)
    spec = get_method(method)
    if not (spec.uses_values or spec.uses_residual):
        value_dirs, betas = [], None
    if spec.runs_on == "token":
        return _token_level(cfg, method, prompts, value_dirs, seed, betas)
    settings = search_settings(cfg, method)
    guided = spec.uses_values
    candidates = generate(cfg, prompts, settings, value_dirs, seed, progress, guided, betas=betas)
    return _pick(cfg, method, candidates)


def decode_scored(
    cfg: RunConfig,
    prompts: pd.DataFrame,
    method: str,
    value_dirs: Sequence[Path],
    seed: int,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """`decode`, with every output's reward (methods that pick by reward already have it)."""
    outputs = decode(cfg, prompts, method, value_dirs, seed, progress)
    if "reward" not in outputs.columns:
        outputs = score_rows(cfg, outputs)
    return outputs
