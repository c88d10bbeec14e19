"""Train V_k on a reweighted table: the pipeline's side of `valuefn.training`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets
import pandas as pd
import torch

from iro.base.config import ConfigError, RunConfig
from iro.base.models import resolve_model
from valuefn.training import COLUMNS, ValueTrainingArguments, train_value_model


def value_rows(table: pd.DataFrame, target: str, pack: bool) -> datasets.Dataset:
    """Training rows: a prompt and its candidates, with the reward or advantage each regresses to.

    `pack`: one row per prompt holding all its candidates (the prompt is read once per row);
    otherwise one row per candidate, as the reweighted table has them.
    """
    regress_to = table["reward"]
    if target == "advantage":
        regress_to = table["reward"] - table["prompt_mean_reward"]
    frame = pd.DataFrame(
        {
            "prompt": table["prompt_text"],
            "responses": table["response"],
            "ended": table["ended"].astype(bool),
            "targets": regress_to.astype(float),
            "weights": table["weight"].astype(float),
        }
    )
    if pack:
        frame = frame.groupby("prompt", sort=False).agg(list).reset_index()
    else:
        frame = frame.assign(**{c: frame[c].map(lambda v: [v]) for c in COLUMNS[1:]})
    return datasets.Dataset.from_pandas(frame[list(COLUMNS)], preserve_index=False)


def training_arguments(cfg: RunConfig, work_dir: Path) -> ValueTrainingArguments:
    """`value.training` as given, plus what the pipeline fixes (paths, seed, device, logging)."""
    fixed = {
        "output_dir": str(work_dir),
        "max_length": cfg.value.max_length,
        "logging_steps": 5,
        "seed": cfg.seed,
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": True,
        "report_to": "none",
    }
    given = cfg.value.training.model_dump()
    known = {f.name for f in dataclasses.fields(ValueTrainingArguments)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"value.training: {unknown} are not TrainingArguments fields")
    reserved = sorted(set(given) & set(fixed))
    if reserved:
        raise ConfigError(
            f"value.training: {reserved} are set by the pipeline (seed: the config's seed; "
            "max_length: value.max_length)"
        )
    return ValueTrainingArguments(**given, **fixed)


def train_value(
    cfg: RunConfig, table: pd.DataFrame, init_dir: Path | None, out_dir: Path, work_dir: Path
) -> dict[str, float]:
    """Train V_k on the reweighted table (from V_{k-1} when given) and save it to `out_dir`."""
    from transformers import AutoTokenizer

    from valuefn.model import TokenValueModel

    v = cfg.value
    args = training_arguments(cfg, work_dir)
    torch.manual_seed(cfg.seed)
    if init_dir is not None:
        model = TokenValueModel.load(init_dir)
        tokenizer = AutoTokenizer.from_pretrained(init_dir)
    else:
        backbone = resolve_model(v.backbone, cfg.cache_dir)
        model = TokenValueModel.from_causal_lm(backbone, v.num_layers, cfg.policy.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
    rows = value_rows(table, v.target, v.pack_candidates)
    metrics = train_value_model(model, tokenizer, rows, args)
    model.save(out_dir, tokenizer)
    return metrics
