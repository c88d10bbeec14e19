"""A trainer's keyword arguments from its config section (value.training, ivl.training).

The section is handed to the trainer's config class as written, so its names are that class's
names; the pipeline then fixes what it owns (paths, seed, device, logging, and whatever resume
needs). A misspelt key or one the pipeline owns stops the run at the config, naming the keys,
not deep in the trainer or silently overridden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from iro.core.config import ConfigError


def pipeline_fixed(output_dir: Path, max_length: int | None, seed: int) -> dict[str, Any]:
    """What every trainer gets from the pipeline whatever its section says: where it writes, the
    token budget of a training text, the run's seed, the device and the pipeline's logging."""
    return {
        "output_dir": str(output_dir),
        "max_length": max_length,
        "logging_steps": 5,
        "seed": seed,
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": True,
        "report_to": "none",
    }


def trainer_kwargs(
    section: str,
    given: Mapping[str, Any],
    config_class: type,
    class_name: str,
    fixed: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    reasons: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`defaults`, overridden by `given` (the config section called `section`), overridden by
    `fixed`: keyword arguments for the dataclass `config_class`.

    A key of `given` that is no field of `config_class` (called `class_name` in the error), or
    one in `fixed`, is a ConfigError; with `reasons` the error says why each fixed key is fixed.
    """
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"{section}: {unknown} are not {class_name} fields")
    reserved = sorted(set(given) & set(fixed))
    if reserved:
        why = f" ({'; '.join(f'{key}: {reasons[key]}' for key in reserved)})" if reasons else ""
        raise ConfigError(f"{section}: {reserved} are set by the pipeline{why}")
    return {**(defaults or {}), **given, **fixed}
