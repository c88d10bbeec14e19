"""The whole IRO run: baselines, K iterations, and the evaluation table."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from iro.core.config import RunConfig
from iro.core.store.remote import open_store
from iro.flows.baselines import baseline_rows
from iro.flows.iteration import run_iteration
from iro.flows.params import (
    DEFAULT_CONFIG,
    ConfigPath,
    Overrides,
    RunName,
    flow_run_namer,
    run_config,
)
from iro.pipeline.evaluation import EvalRow, rows_as_dicts
from iro.pipeline.preflight import check_run
from iro.tasks.publish import publish_evaluation


@flow(name="iro-pipeline", flow_run_name=flow_run_namer("pipeline"))
def iro_pipeline(
    config: ConfigPath = DEFAULT_CONFIG,
    run_name: RunName = None,
    overrides: Overrides = None,
) -> dict[str, Any]:
    """Evaluate the baselines, run every iteration in order, and report all of them side by side.

    Args:
        config: YAML run config; a relative path is read from the serving process's directory.
        run_name: names the run (store index, artifact keys); empty keeps the config's run_name.
        overrides: dotted config keys to override, e.g. {"search.beams": 4}.
    """
    cfg = run_config(config, run_name, overrides)
    check_run(
        cfg, cfg.iterations, cfg.eval.enabled
    )  # before any stage: models, prompts, trainer settings
    return run_pipeline.fn(cfg)


@flow(name="iro-pipeline", flow_run_name=flow_run_namer("pipeline"))
def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """The whole run `cfg` describes, its inputs already checked: baselines, every iteration (each
    a subflow handed the same validated config), and the evaluation table."""
    logger = get_run_logger()
    rows, reference_reward = baseline_rows(cfg)
    for k in range(1, cfg.iterations + 1):
        summary = run_iteration(cfg, k)
        if "evaluation" in summary:
            rows.append(EvalRow(**summary["evaluation"]))

    report = {
        "run_name": cfg.run_name,
        "config": cfg.model_dump(),
        "evaluation": rows_as_dicts(rows),
    }
    path = open_store(cfg.store).record_run_step(cfg.run_name, "evaluation", report)
    publish_evaluation(cfg.run_name, rows, reference_reward)
    logger.info("evaluation table saved to %s", path)
    return {"report_path": str(path), **report}
