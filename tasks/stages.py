"""One Prefect task per pipeline stage. No algorithm here: each calls the library and mirrors
the resulting store artifact in the Prefect UI.

Resume comes from the content-addressed store (a finished stage is found by id and reused), so
Prefect's own result caching is off.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from iro.pipeline import Pipeline
from iro.store import Artifact
from tasks.publish import progress_reporter, publish_stage


@task(name="rollout", cache_policy=NONE)
def rollout_task(pipeline: Pipeline, iteration: int, values: list[Artifact]) -> Artifact:
    run = pipeline.cfg.run_name
    artifact = pipeline.rollout(
        iteration, values, progress_reporter(run, "iter", iteration, "rollout")
    )
    publish_stage(
        run,
        ("iter", iteration, "rollout"),
        f"iteration {iteration}: rollout",
        artifact,
        artifact.table(),
    )
    return artifact


@task(name="score", cache_policy=NONE)
def score_task(pipeline: Pipeline, iteration: int, rollout: Artifact) -> Artifact:
    artifact = pipeline.score(rollout)
    publish_stage(
        pipeline.cfg.run_name,
        ("iter", iteration, "score"),
        f"iteration {iteration}: rewards",
        artifact,
        artifact.table(),
    )
    return artifact


@task(name="reweight", cache_policy=NONE)
def reweight_task(pipeline: Pipeline, iteration: int, scored: Artifact) -> Artifact:
    artifact = pipeline.reweight(scored)
    publish_stage(
        pipeline.cfg.run_name,
        ("iter", iteration, "reweight"),
        f"iteration {iteration}: reweighting",
        artifact,
        artifact.table(),
    )
    return artifact


@task(name="train-value", cache_policy=NONE)
def train_value_task(
    pipeline: Pipeline, iteration: int, reweighted: Artifact, previous: Artifact | None
) -> Artifact:
    artifact = pipeline.train_value(reweighted, previous)
    publish_stage(
        pipeline.cfg.run_name,
        ("iter", iteration, "value"),
        f"iteration {iteration}: value model V_{iteration}",
        artifact,
    )
    return artifact


@task(name="evaluate", cache_policy=NONE)
def evaluate_task(pipeline: Pipeline, method: str, values: list[Artifact], label: str) -> Artifact:
    run = pipeline.cfg.run_name
    artifact = pipeline.evaluate(method, values, progress_reporter(run, "eval", label))
    publish_stage(run, ("eval", label), f"evaluation: {label}", artifact, artifact.table())
    return artifact
