"""The whole IRO run: baselines, K iterations, and the evaluation table."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.iteration import iro_iteration
from iro.config import load_config
from iro.pipeline import Pipeline
from iro.report import EvalRow, eval_row, format_markdown, format_table, rows_as_dicts
from tasks.publish import artifact_key
from tasks.stages import evaluate_task


@flow(name="iro-pipeline")
def iro_pipeline(
    config: str = "configs/demo.yaml", overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Evaluate the baselines, run every iteration in order, and report all of them side by side."""
    logger = get_run_logger()
    cfg = load_config(config, overrides)
    pipeline = Pipeline(cfg)
    rows: list[EvalRow] = []
    reference_reward = None
    if cfg.eval.enabled:
        u = cfg.search.samples_per_prompt
        for method in cfg.eval.baselines:
            label = "base" if method == "base" else f"bon-{u}"
            artifact = evaluate_task(pipeline, method, [], label)
            rows.append(eval_row(label, artifact))
            reference_reward = artifact.metrics["reference_mean_reward"]
    for k in range(1, cfg.iterations + 1):
        summary = iro_iteration(config=config, iteration=k, overrides=overrides)
        if "evaluation" in summary:
            rows.append(EvalRow(**summary["evaluation"]))

    report = {
        "run_name": cfg.run_name,
        "config": cfg.model_dump(),
        "evaluation": rows_as_dicts(rows),
    }
    path = pipeline.store.record_run_step(cfg.run_name, "evaluation", report)
    if rows:
        create_markdown_artifact(
            key=artifact_key(cfg.run_name, "evaluation"),
            markdown=f"## Run {cfg.run_name}: held-out evaluation\n\n{format_markdown(rows)}",
            description="evaluation table",
        )
        logger.info("evaluation on held-out prompts:\n%s", format_table(rows, reference_reward))
    logger.info("evaluation table saved to %s", path)
    return {"report_path": str(path), **report}
