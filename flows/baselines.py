"""The comparison methods of a run on the held-out prompts: the base model and best-of-U.

U = search.beams * search.children, the same compute as one IRO guided search, so the rows are
comparable with the iterations' evaluations.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from iro.core.config import RunConfig
from iro.flows.params import (
    DEFAULT_CONFIG,
    ConfigPath,
    Overrides,
    RunName,
    flow_run_namer,
    run_config,
)
from iro.pipeline.evaluation import EvalRow, eval_row, rows_as_dicts
from iro.pipeline.methods import method_label
from iro.pipeline.runner import Pipeline
from iro.tasks.stages import evaluate_task


@flow(name="iro-baselines", flow_run_name=flow_run_namer("baselines"))
def iro_baselines(
    config: ConfigPath = DEFAULT_CONFIG,
    run_name: RunName = None,
    overrides: Overrides = None,
) -> dict[str, Any]:
    """Evaluate the config's `eval.baselines`; returns their rows and the reference's reward.

    Args:
        config: YAML run config; a relative path is read from the serving process's directory.
        run_name: names the run (store index, artifact keys); empty keeps the config's run_name.
        overrides: dotted config keys to override, e.g. {"search.beams": 4}.
    """
    return run_baselines.fn(run_config(config, run_name, overrides))


@flow(name="iro-baselines", flow_run_name=flow_run_namer("baselines"))
def run_baselines(cfg: RunConfig) -> dict[str, Any]:
    """The baselines of the run `cfg` describes: the subflow of the pipeline flows, and the body
    of `iro-baselines`."""
    pipeline = Pipeline(cfg)
    rows = []
    reference_reward = None
    with pipeline.store.run_lock(cfg.run_name):
        for method in cfg.eval.baselines:
            label = method_label(method, cfg)
            artifact = evaluate_task(pipeline, method, [], label)
            rows.append(eval_row(label, artifact))
            reference_reward = artifact.metrics["reference_mean_reward"]
    return {"evaluation": rows_as_dicts(rows), "reference_mean_reward": reference_reward}


def baseline_rows(cfg: RunConfig) -> tuple[list[EvalRow], float | None]:
    """The baselines' table rows and the reference's mean reward, from the `iro-baselines`
    subflow; none when the config turns evaluation off."""
    if not cfg.eval.enabled:
        return [], None
    baselines = run_baselines(cfg)
    return [EvalRow(**row) for row in baselines["evaluation"]], baselines["reference_mean_reward"]
