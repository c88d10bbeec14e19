"""One decoder interface over every mode: prompts in, one response per prompt out.

- chunk:  value-guided chunk-level beam search (IRO / CBS), final pick by reward or by value;
- bon:    best of U = w*k samples by reward;
- sample: one plain sample;
- vas:    token-level value guidance (logits shifted by beta * (V - mean V) over the top k);
- args:   ARGS (logit + w * reward(prefix + token) over the top k).

chunk, bon and sample run on the configured engine (vLLM by default); vas and args need the
policy's logits at every step and run on transformers with KV caches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from iro.base.config import RunConfig
from iro.base.data import render_prompts
from iro.pipeline import stages
from valuefn.search import SearchSettings
from valuefn.token_guidance import RewardShift, TokenGuidanceSettings, ValueShift, decode_one

log = logging.getLogger(__name__)

MODES = ("chunk", "bon", "sample", "vas", "args")


def _search_settings(cfg: RunConfig, mode: str) -> SearchSettings:
    if mode == "chunk":
        return stages.guided_settings(cfg)
    n = cfg.search.samples_per_prompt if mode == "bon" else 1
    return stages.sample_settings(cfg, n)


def _pick(cfg: RunConfig, mode: str, candidates: pd.DataFrame) -> pd.DataFrame:
    if mode == "sample" or cfg.decode.final_pick == "value":
        # pools come ranked by value, best first
        return candidates[candidates["candidate"] == 0].reset_index(drop=True)
    return stages.best_per_prompt(stages.score(stages.build_run_reward(cfg), candidates))


def _token_level(
    cfg: RunConfig, mode: str, prompts: pd.DataFrame, value_dirs: Sequence[Path], seed: int
) -> pd.DataFrame:
    from iro.base.engines.hf_engine import HFEngine
    from iro.base.models import resolve_model

    d = cfg.decode
    engine = HFEngine(
        resolve_model(cfg.policy.model, cfg.cache_dir),
        dtype=cfg.policy.dtype,
        trust_remote_code=cfg.policy.trust_remote_code,
    )
    tokenizer = engine.tokenizer
    if mode == "vas":
        ensemble = stages.build_value_ensemble(cfg, value_dirs)
        if ensemble is None:
            raise ValueError("decode mode 'vas' needs at least one value model")
        scorer = ValueShift(ensemble, d.guidance_beta, tokenizer)
    else:
        scorer = RewardShift(stages.build_run_reward(cfg), d.args_weight, tokenizer)
    settings = TokenGuidanceSettings(
        top_k=d.token_top_k,
        max_new_tokens=cfg.sampling.max_new_tokens,
        temperature=cfg.sampling.temperature,
        greedy=d.greedy,
    )
    texts = render_prompts(tokenizer, cfg.data, prompts["prompt"].tolist())
    rows = []
    for i, (raw, text) in enumerate(zip(prompts["prompt"], texts, strict=True)):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        response, ended = decode_one(
            engine.model, engine.eos_token_id, ids, raw, text, scorer, settings, seed + i
        )
        rows.append(
            {
                "prompt_id": prompts["id"].iloc[i],
                "prompt": raw,
                "reference": prompts["reference"].iloc[i],
                "prompt_text": text,
                "candidate": 0,
                "response": tokenizer.decode(response, skip_special_tokens=True),
                "num_tokens": len(response),
                "ended": ended,
                "value_score": float("nan"),
            }
        )
    return pd.DataFrame(rows)


def decode(
    cfg: RunConfig, prompts: pd.DataFrame, mode: str, value_dirs: Sequence[Path], seed: int
) -> pd.DataFrame:
    """One response per prompt (columns as `stages.generate`, plus reward for picks by reward)."""
    if mode not in MODES:
        raise ValueError(f"unknown decode mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode in ("vas", "args"):
        return _token_level(cfg, mode, prompts, value_dirs, seed)
    if mode == "chunk" and not value_dirs and cfg.search.implicit_reward is None:
        log.warning("chunk search without value models ranks nothing: it is sampling in chunks")
    candidates = stages.generate(
        cfg, prompts, _search_settings(cfg, mode), value_dirs if mode == "chunk" else [], seed
    )
    return _pick(cfg, mode, candidates)
