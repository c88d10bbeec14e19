"""The work of each pipeline stage as plain functions over tables (no Prefect here).

Tables are pandas frames with one row per candidate response:
prompt_id, prompt (the raw task input), reference, prompt_text (what the policy read), candidate,
response, num_tokens, ended, value_score; scoring adds reward and reward_<component> columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iro.base.config import RunConfig
from iro.base.data import render_prompts
from iro.base.engines.base import SamplingSettings
from iro.base.engines.factory import get_engine
from iro.base.models import resolve_model
from reward import WeightedSum, build_reward
from valuefn.implicit import ImplicitRewardScorer
from valuefn.scoring import ValueEnsemble
from valuefn.search import Scorer, SearchSettings, guided_search
from valuefn.training import ValueExample, ValueTrainingArguments, train_value_model

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (message, fraction done)


def policy_tokenizer(cfg: RunConfig):
    from transformers import AutoTokenizer

    path = resolve_model(cfg.policy.model, cfg.cache_dir)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.policy.trust_remote_code)


def sampling_settings(cfg: RunConfig) -> SamplingSettings:
    s = cfg.sampling
    return SamplingSettings(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)


def guided_settings(cfg: RunConfig) -> SearchSettings:
    return SearchSettings(
        beams=cfg.search.beams,
        children=cfg.search.children,
        chunk_tokens=cfg.search.chunk_tokens,
        max_new_tokens=cfg.sampling.max_new_tokens,
        selection=cfg.search.selection,
        stop_strings=tuple(cfg.sampling.stop or ()),
    )


def sample_settings(cfg: RunConfig, n: int) -> SearchSettings:
    """n independent whole responses: best-of-n (n > 1) or plain sampling (n = 1)."""
    return SearchSettings.best_of_n(n, cfg.sampling.max_new_tokens, tuple(cfg.sampling.stop or ()))


def build_value_ensemble(cfg: RunConfig, value_dirs: Sequence[Path]) -> ValueEnsemble | None:
    if not value_dirs:
        return None
    return ValueEnsemble.load(
        value_dirs,
        [cfg.value.beta] * len(value_dirs),
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


def generate(
    cfg: RunConfig,
    prompts: pd.DataFrame,
    settings: SearchSettings,
    value_dirs: Sequence[Path],
    seed: int,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Run the (value-guided) search for every prompt; one row per final candidate."""
    if prompts.empty:
        raise ValueError("no prompts to generate for")
    tokenizer = policy_tokenizer(cfg)
    engine = get_engine(cfg.policy, cfg.cache_dir, cfg.seed)
    prompt_texts = render_prompts(tokenizer, cfg.data, prompts["prompt"].tolist())
    prompt_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in prompt_texts]
    limit = cfg.policy.max_model_len - settings.max_new_tokens
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > limit]
    if too_long:
        raise ValueError(
            f"prompt {prompts['id'].iloc[too_long[0]]!r} has {len(prompt_ids[too_long[0]])} tokens; "
            f"policy.max_model_len - sampling.max_new_tokens allows {limit}"
        )
    scorer = build_scorer(cfg, value_dirs)
    started = time.time()

    def on_step(step: int, longest: int) -> None:
        if progress:
            progress(
                f"search step {step}: longest beam {longest} tokens",
                longest / settings.max_new_tokens,
            )

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
    )
    rows = []
    for p, pool in enumerate(pools):
        for c, candidate in enumerate(pool):
            rows.append(
                {
                    "prompt_id": prompts["id"].iloc[p],
                    "prompt": prompts["prompt"].iloc[p],
                    "reference": prompts["reference"].iloc[p],
                    "prompt_text": prompt_texts[p],
                    "candidate": c,
                    "response": candidate.text,
                    "num_tokens": len(candidate.response_ids),
                    "ended": candidate.ended,
                    "value_score": candidate.score,
                }
            )
    table = pd.DataFrame(rows)
    seconds = time.time() - started
    log.info(
        "generated %d candidates for %d prompts in %.1f s (%.0f new tokens/s, engine %s)",
        len(table), len(prompts), seconds, table["num_tokens"].sum() / max(seconds, 1e-9), engine.name,
    )  # fmt: skip
    return table


def build_run_reward(cfg: RunConfig) -> WeightedSum:
    return build_reward([(c.type, c.weight, dict(c.options)) for c in cfg.reward.components])


def score(reward: WeightedSum, table: pd.DataFrame) -> pd.DataFrame:
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


def win_rate_metrics(outputs: pd.DataFrame, reference_rewards: np.ndarray) -> dict[str, float]:
    """Mean reward, and the fraction of prompts where the output out-scores the reference."""
    rewards = outputs["reward"].to_numpy()
    wins = (rewards > reference_rewards).astype(float) + 0.5 * (rewards == reference_rewards)
    return {
        "mean_reward": float(rewards.mean()),
        "win_rate": float(wins.mean()),
        "mean_words": float(outputs["response"].str.split().str.len().mean()),
        "prompts": float(len(outputs)),
    }


def value_examples(table: pd.DataFrame) -> list[ValueExample]:
    return [
        ValueExample(
            prompt=row.prompt_text,
            response=row.response,
            ended=bool(row.ended),
            reward=float(row.reward),
            weight=float(row.weight),
        )
        for row in table.itertuples()
    ]


def train_value(
    cfg: RunConfig, table: pd.DataFrame, init_dir: Path | None, out_dir: Path, work_dir: Path
) -> dict[str, float]:
    """Train V_k on the reweighted table (from V_{k-1} when given) and save it to `out_dir`."""
    from transformers import AutoTokenizer

    from valuefn.model import TokenValueModel

    v = cfg.value
    torch.manual_seed(cfg.seed)
    if init_dir is not None:
        model = TokenValueModel.load(init_dir)
        tokenizer = AutoTokenizer.from_pretrained(init_dir)
    else:
        backbone = resolve_model(v.backbone, cfg.cache_dir)
        model = TokenValueModel.from_causal_lm(backbone, v.num_layers, cfg.policy.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
    args = ValueTrainingArguments(
        output_dir=str(work_dir),
        learning_rate=v.learning_rate,
        adam_epsilon=v.adam_epsilon,
        lr_scheduler_type=v.lr_scheduler,
        warmup_steps=0,
        num_train_epochs=v.epochs,
        per_device_train_batch_size=v.batch_size,
        gradient_accumulation_steps=v.gradient_accumulation_steps,
        max_length=v.max_length,
        logging_steps=5,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    metrics = train_value_model(model, tokenizer, value_examples(table), args)
    model.save(out_dir, tokenizer)
    return metrics
