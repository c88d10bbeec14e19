"""Inverse Value Learning as a run: the residual value network learned from demonstrations,
evaluated on the held-out prompts beside the baselines (docs/method.md).

The same store, run records, evaluation table and reports as an IRO run, under the run name
`<config run_name>-ivl` by default. Decoding adds the residual to `policy.model`'s logits; set
`ivl.train_base` to another model of the family to train against it and transfer.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from iro.core.config import RunConfig
from iro.flows.baselines import baseline_rows
from iro.flows.params import (
    DEFAULT_CONFIG,
    ConfigPath,
    Overrides,
    RunName,
    flow_run_namer,
    show_library_logs,
)
from iro.pipeline.evaluation import eval_row, rows_as_dicts
from iro.pipeline.methods import method_run_config
from iro.pipeline.preflight import check_run
from iro.pipeline.runner import Pipeline
from iro.tasks.publish import publish_evaluation
from iro.tasks.stages import evaluate_task, train_residual_task


@flow(name="ivl", flow_run_name=flow_run_namer("ivl"))
def ivl_pipeline(
    config: ConfigPath = DEFAULT_CONFIG,
    run_name: RunName = None,
    overrides: Overrides = None,
) -> dict[str, Any]:
    """Train IVL's residual on the training split's demonstrations and evaluate it next to the
    baselines.

    Args:
        config: YAML run config; a relative path is read from the serving process's directory.
        run_name: names the run; empty: the config's run_name followed by -ivl.
        overrides: dotted config keys to override, e.g. {"ivl.norm_penalty": 0.1}.
    """
    show_library_logs()
    cfg = method_run_config(config, run_name, overrides, "ivl")
    check_run(cfg, 0, cfg.eval.enabled)  # before any stage: models, prompts, trainer settings
    return run_ivl.fn(cfg)


@flow(name="ivl", flow_run_name=flow_run_namer("ivl"))
def run_ivl(cfg: RunConfig) -> dict[str, Any]:
    """The IVL run `cfg` describes, its inputs already checked: the body of `ivl`."""
    pipeline = Pipeline(cfg)
    rows, reference_reward = baseline_rows(cfg)
    with pipeline.store.run_lock(cfg.run_name):
        residual = train_residual_task(pipeline)
        if cfg.eval.enabled:
            rows.append(eval_row("ivl", evaluate_task(pipeline, "ivl", [residual], "ivl")))
        report = {
            "run_name": cfg.run_name,
            "config": cfg.model_dump(),
            "artifacts": {"ivl": str(residual.path)},
            "ivl_training": residual.metrics,
            "evaluation": rows_as_dicts(rows),
        }
        path = pipeline.store.record_run_step(cfg.run_name, "evaluation", report)
    publish_evaluation(cfg.run_name, rows, reference_reward)
    return {"report_path": str(path), **report}
