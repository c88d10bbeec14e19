"""Where a stage's work runs: in this process, or sharded on Ray actors. Chosen once, here.

Generation and reward scoring are written as plain functions over a table
(`generation.generate_shard`, `scoring.score_table`) that know nothing of Ray. An `Executor`
runs them: `InProcess` calls them directly; `sharding.RayExecutor` hands contiguous shards to
actors and merges their tables into exactly the one this process would have made. `executor`
picks one from the config, as the rest of the pipeline never asks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pandas as pd

from iro.core.config import RunConfig
from iro.pipeline.generation import GenerationJob, Progress, generate_shard
from iro.pipeline.scoring import build_run_reward, score_table
from iro.valuefn.search import SearchSettings


class Executor(Protocol):
    def generate(
        self, cfg: RunConfig, prompts: pd.DataFrame, job: GenerationJob, progress: Progress | None
    ) -> pd.DataFrame:
        """One row per final candidate of every prompt's search."""
        ...

    def score(self, cfg: RunConfig, table: pd.DataFrame) -> pd.DataFrame:
        """`table` with the run's reward and one column per reward component."""
        ...


class InProcess:
    """Everything in this process (one engine, one reward)."""

    def generate(
        self, cfg: RunConfig, prompts: pd.DataFrame, job: GenerationJob, progress: Progress | None
    ) -> pd.DataFrame:
        return generate_shard(cfg, prompts, job, progress)

    def score(self, cfg: RunConfig, table: pd.DataFrame) -> pd.DataFrame:
        return score_table(build_run_reward(cfg), table, cfg.reward.batch_size)


def executor(cfg: RunConfig) -> Executor:
    """Ray actors when ray.workers > 1, else this process."""
    if cfg.ray.workers > 1:
        from iro.pipeline.sharding import RayExecutor  # imports ray only when asked for

        return RayExecutor()
    return InProcess()


def generate(
    cfg: RunConfig,
    prompts: pd.DataFrame,
    settings: SearchSettings,
    value_dirs: Sequence[Path],
    seed: int,
    progress: Progress | None = None,
    guided: bool = True,
    prior_only: bool = False,
    betas: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Run the search for every prompt; one row per final candidate.

    `guided`: rank beams by sum_i V_i / beta_i over `value_dirs` (`betas`, default value.beta;
    plus the implicit reward when configured); unguided searches (plain samples, best-of-N)
    score nothing. `prior_only`: rank by the reward of the partial responses alone, the value
    with no learned residual (the benchmark's ablation of what value learning adds).
    """
    if prompts.empty:
        raise ValueError("no prompts to generate for")
    job = GenerationJob(
        settings,
        tuple(Path(d) for d in value_dirs),
        seed,
        guided,
        prior_only,
        None if betas is None else tuple(float(b) for b in betas),
    )
    return executor(cfg).generate(cfg, prompts, job, progress)


def score_rows(cfg: RunConfig, table: pd.DataFrame) -> pd.DataFrame:
    """The score stage's table: the run's reward on every candidate row."""
    if table.empty:
        raise ValueError("no candidates to score")
    return executor(cfg).score(cfg, table)
