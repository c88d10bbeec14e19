"""One Prefect task per pipeline stage. No algorithm here: each calls the library and mirrors
the resulting store artifact in the Prefect UI.

Resume comes from the content-addressed store (a finished stage is found by id and reused), so
Prefect's own result caching is off.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from iro.core.store.local import Artifact
from iro.pipeline.runner import Pipeline
from iro.tasks.publish import progress_reporter, publish_stage


def _mirror(
    pipeline: Pipeline,
    iteration: int,
    stage: str,
    title: str,
    artifact: Artifact,
    with_table: bool = True,
) -> Artifact:
    table = artifact.table() if with_table else None
    publish_stage(
        pipeline.cfg.run_name,
        ("iter", iteration, stage),
        f"iteration {iteration}: {title}",
        artifact,
        table,
    )
    return artifact


@task(name="rollout", cache_policy=NONE)
def rollout_task(pipeline: Pipeline, iteration: int, values: list[Artifact]) -> Artifact:
    progress = progress_reporter(pipeline.cfg.run_name, "iter", iteration, "rollout")
    return _mirror(
        pipeline, iteration, "rollout", "rollout", pipeline.rollout(iteration, values, progress)
    )


@task(name="score", cache_policy=NONE)
def score_task(pipeline: Pipeline, iteration: int, rollout: Artifact) -> Artifact:
    return _mirror(pipeline, iteration, "score", "rewards", pipeline.score(rollout))


@task(name="reweight", cache_policy=NONE)
def reweight_task(pipeline: Pipeline, iteration: int, scored: Artifact) -> Artifact:
    return _mirror(pipeline, iteration, "reweight", "reweighting", pipeline.reweight(scored))


@task(name="train-value", cache_policy=NONE)
def train_value_task(
    pipeline: Pipeline, iteration: int, reweighted: Artifact, previous: Artifact | None
) -> Artifact:
    value = pipeline.train_value(reweighted, previous)
    return _mirror(
        pipeline, iteration, "value", f"value model V_{iteration}", value, with_table=False
    )


@task(name="evaluate", cache_policy=NONE)
def evaluate_task(pipeline: Pipeline, method: str, values: list[Artifact], label: str) -> Artifact:
    run = pipeline.cfg.run_name
    artifact = pipeline.evaluate(method, values, progress_reporter(run, "eval", label))
    publish_stage(run, ("eval", label), f"evaluation: {label}", artifact, artifact.table())
    return artifact


@task(name="train-residual", cache_policy=NONE)
def train_residual_task(pipeline: Pipeline) -> Artifact:
    residual = pipeline.train_residual()
    publish_stage(pipeline.cfg.run_name, ("ivl",), "IVL residual", residual, None)
    return residual
