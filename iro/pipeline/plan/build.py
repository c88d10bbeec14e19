"""One plan: the models, memory, tokens and hours of a run, assembled from the config alone."""

from __future__ import annotations

from dataclasses import dataclass

from iro.core.config import RunConfig
from iro.pipeline.plan.gpus import GPUS, Gpu
from iro.pipeline.plan.hours import work_hours
from iro.pipeline.plan.memory import Stage, generation_stage, scoring_stage, training_stage
from iro.pipeline.plan.models import Model, run_models
from iro.pipeline.plan.workload import Work, prompt_tokens, run_work


@dataclass(frozen=True)
class Plan:
    """A run's needs on one GPU: what `iro check --plan` prints."""

    source: str
    cfg: RunConfig
    gpu: Gpu
    prompt_tokens: int
    models: tuple[Model, ...]
    stages: tuple[Stage, ...]
    work: tuple[Work, ...]
    hours: tuple[dict[str, float | None], ...]  # per Work: stage -> hours


def build_plan(cfg: RunConfig, source: str, gpu: str = "h100") -> Plan:
    """Everything `iro check --plan` prints, from the config alone."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    device = GPUS[gpu]
    models = run_models(cfg)
    work = run_work(cfg)
    stages = (
        generation_stage(cfg, models),
        training_stage(cfg, models),
        scoring_stage(cfg, models),
    )
    hours = tuple(work_hours(cfg, models, w, device) for w in work)
    return Plan(source, cfg, device, prompt_tokens(cfg), models, stages, work, hours)
