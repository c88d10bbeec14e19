"""The trainers' settings, checked when a run starts instead of when its training does.

`value.training` and `ivl.training` pass through to TrainingArguments: a misspelt key there would
otherwise stop the run only at its first value stage, after rollout and scoring.
"""

from __future__ import annotations

from pathlib import Path

from iro.core.config import RunConfig
from iro.pipeline import ivl, value_training

NOWHERE = Path("preflight")  # what the keyword arguments name as output dir: never created


def check_trainer_settings(cfg: RunConfig) -> None:
    """Raise ConfigError naming a key TrainingArguments does not know, or one the pipeline sets."""
    value_training.training_kwargs(cfg, NOWHERE)
    ivl.training_kwargs(cfg, NOWHERE)
