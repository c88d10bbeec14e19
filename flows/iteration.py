"""One IRO iteration k: rollout from pi_{k-1}, reward, reweight, train V_k, evaluate pi_k."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from iro.core.config import RunConfig
from iro.flows.params import (
    DEFAULT_CONFIG,
    ConfigPath,
    Iteration,
    Overrides,
    RunName,
    flow_run_namer,
    run_config,
)
from iro.pipeline.evaluation import eval_row
from iro.pipeline.methods import guided_method, method_label
from iro.pipeline.preflight import check_run
from iro.pipeline.runner import Pipeline
from iro.tasks.stages import (
    evaluate_task,
    reweight_task,
    rollout_task,
    score_task,
    train_value_task,
)


@flow(name="iro-iteration", flow_run_name=flow_run_namer("iter-{iteration}"))
def iro_iteration(
    config: ConfigPath = DEFAULT_CONFIG,
    iteration: Iteration = 1,
    run_name: RunName = None,
    overrides: Overrides = None,
) -> dict[str, Any]:
    """Run iteration `iteration` of the run that `config` (plus dotted-key `overrides`) names.

    V_1..V_{k-1} are read from the artifact store; if iteration k-1 has not finished with this
    config, this fails naming the missing artifact rather than recomputing it. Work on one run is
    serialised by the store's run lock (so iteration k started while k-1 is still running waits
    for it); different runs proceed in parallel.

    Args:
        config: YAML run config; a relative path is read from the serving process's directory.
        iteration: k; iterations 1..k-1 of this run must have finished (or be running).
        run_name: names the run (store index, artifact keys); empty keeps the config's run_name.
        overrides: dotted config keys to override, e.g. {"search.beams": 4}.
    """
    cfg = run_config(config, run_name, overrides)
    _check_iteration(cfg, iteration)
    check_run(cfg, iteration, False)  # before any stage: models, prompts, trainer settings
    return run_iteration.fn(cfg, iteration)


@flow(name="iro-iteration", flow_run_name=flow_run_namer("iter-{iteration}"))
def run_iteration(cfg: RunConfig, iteration: Iteration) -> dict[str, Any]:
    """Iteration `iteration` of the run `cfg` describes, its inputs already checked: the subflow
    of `iro-pipeline`, and the body of `iro-iteration`."""
    _check_iteration(cfg, iteration)
    pipeline = Pipeline(cfg)
    with pipeline.store.run_lock(cfg.run_name):
        return _iteration(pipeline, iteration)


def _check_iteration(cfg: RunConfig, iteration: int) -> None:
    if not 1 <= iteration <= cfg.iterations:
        raise ValueError(
            f"iteration must be in 1..{cfg.iterations} (config iterations), got {iteration}"
        )


def _iteration(pipeline: Pipeline, iteration: int) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = pipeline.cfg
    values = pipeline.value_chain(iteration - 1)

    rollout = rollout_task(pipeline, iteration, values)
    scored = score_task(pipeline, iteration, rollout)
    reweighted = reweight_task(pipeline, iteration, scored)
    value = train_value_task(pipeline, iteration, reweighted, values[-1] if values else None)
    summary: dict[str, Any] = {
        "run_name": cfg.run_name,
        "iteration": iteration,
        "config": cfg.model_dump(),
        "artifacts": {a.stage: str(a.path) for a in (rollout, scored, reweighted, value)},
        "reweight": reweighted.metrics,
        "value_training": value.metrics,
        # the aligned policy: pi_base guided by these value models with these search settings
        "policy": {
            "base_model": cfg.policy.model,
            "value_models": [str(v.file("value_model")) for v in [*values, value]],
            "betas": cfg.value.betas(len(values) + 1),
            "method": guided_method(cfg),
            "search": cfg.search.model_dump(),
            "sampling": cfg.sampling.model_dump(),
        },
    }
    if cfg.eval.enabled:
        method = guided_method(cfg)
        label = method_label(method, cfg, iteration)
        evaluation = evaluate_task(pipeline, method, [*values, value], label)
        summary["evaluation"] = eval_row(label, evaluation).__dict__
    path = pipeline.store.record_run_step(cfg.run_name, f"iteration-{iteration}", summary)
    logger.info("iteration %d of run %s done; manifest at %s", iteration, cfg.run_name, path)
    return summary
