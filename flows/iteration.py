"""One IRO iteration k: rollout from pi_{k-1}, reward, reweight, train V_k, evaluate pi_k."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from iro.config import load_config
from iro.pipeline import Pipeline
from iro.report import eval_row
from tasks.stages import evaluate_task, reweight_task, rollout_task, score_task, train_value_task


def _run_name() -> str:
    params = flow_run.parameters
    cfg = load_config(params["config"], params.get("overrides"))
    return f"{cfg.run_name}-iter-{params['iteration']}"


@flow(name="iro-iteration", flow_run_name=_run_name)
def iro_iteration(
    config: str = "configs/demo.yaml", iteration: int = 1, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run iteration `iteration` of the run that `config` (plus dotted-key `overrides`) names.

    V_1..V_{k-1} are read from the artifact store; if iteration k-1 has not finished with this
    config, this fails naming the missing artifact rather than recomputing it.
    """
    logger = get_run_logger()
    cfg = load_config(config, overrides)
    if not 1 <= iteration <= cfg.iterations:
        raise ValueError(
            f"iteration must be in 1..{cfg.iterations} (config iterations), got {iteration}"
        )
    pipeline = Pipeline(cfg)
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
            "betas": [cfg.value.beta] * (len(values) + 1),
            "search": cfg.search.model_dump(),
            "sampling": cfg.sampling.model_dump(),
        },
    }
    if cfg.eval.enabled:
        evaluation = evaluate_task(pipeline, "iro", [*values, value], f"iro-{iteration}")
        summary["evaluation"] = eval_row(f"iro-iter{iteration}", evaluation).__dict__
    path = pipeline.store.record_run_step(cfg.run_name, f"iteration-{iteration}", summary)
    logger.info("iteration %d of run %s done; manifest at %s", iteration, cfg.run_name, path)
    return summary
