"""What a run reads, checked before its first stage: every entry point (the `iro` commands and the
Prefect flows) calls `check_run` instead of finding a problem hours in.

Beyond the models and prompts (`check_run_inputs`), `value.training` and `ivl.training` pass
through to TrainingArguments: a misspelt key there would otherwise stop the run only at its first
value stage, after rollout and scoring.
"""

from __future__ import annotations

from pathlib import Path

from iro.core.compat import check_run_inputs
from iro.core.config import RunConfig
from iro.pipeline import ivl, value_training

NOWHERE = Path("preflight")  # what the keyword arguments name as output dir: never created


def check_trainer_settings(cfg: RunConfig) -> None:
    """Raise ConfigError naming a key TrainingArguments does not know, or one the pipeline sets."""
    value_training.training_kwargs(cfg, NOWHERE)
    ivl.training_kwargs(cfg, NOWHERE)


def check_run(cfg: RunConfig, iterations: int, evaluate: bool) -> None:
    """Models, prompts for `iterations` iterations (and the evaluation when `evaluate`), and the
    trainers' settings."""
    check_run_inputs(cfg, iterations, evaluate)
    check_trainer_settings(cfg)
