"""The `winrate-report` flow: a run's win-rate report, mirrored as Prefect artifacts.

`report_deployment(cron)` gives the scheduled deployment for `serve` to register; with no run
named it reports the latest run each time it fires.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from iro.core.config import JudgeConfig, RunConfig, load_config
from iro.core.store.remote import open_store
from iro.reports.run import build_report, latest_run
from iro.reward.openai_client import resolve_api_key
from iro.tasks.publish import artifact_key


def judge_api_key(judge: JudgeConfig) -> str:
    """The key from the named Prefect Secret, else from the environment; never logged."""
    if judge.api_key_secret:
        from prefect.blocks.system import Secret

        return resolve_api_key(judge.api_key_env, Secret.load(judge.api_key_secret).get())
    return resolve_api_key(judge.api_key_env)


@flow(name="winrate-report")
def winrate_report(
    run: str | None = None, config: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Report `run` (default: the latest run in the store) with the config's `report` section."""
    logger = get_run_logger()
    cfg = load_config(config, overrides) if config else RunConfig()
    report_cfg = cfg.report
    # resolve the key first: a missing one stops the flow before any work or request
    needs_key = report_cfg.pairwise_judge is not None or report_cfg.alpaca_eval
    api_key = judge_api_key(report_cfg.judge) if needs_key else None
    store = open_store(cfg.store)
    run_name = run or latest_run(store)
    artifact = build_report(store, run_name, report_cfg, api_key)
    table = artifact.table()
    create_table_artifact(
        key=artifact_key(run_name, "winrate-report", "table"),
        table=table.astype(object).where(table.notna(), None).to_dict(orient="records"),
        description=f"win rates of run {run_name} against {report_cfg.baseline}",
    )
    summary = artifact.file("summary.md").read_text()
    create_markdown_artifact(
        key=artifact_key(run_name, "winrate-report", "summary"),
        markdown=f"{summary}\nstore artifact `{artifact.stage}/{artifact.id}`\n",
        description=f"win-rate report of run {run_name}",
    )
    logger.info("win-rate report of run %s: %s", run_name, artifact.path)
    return {"run_name": run_name, "artifact": str(artifact.path), "rows": table.to_dict("records")}


def report_deployment(
    cron: str,
    name: str = "daily",
    run: str | None = None,
    config: str | None = None,
    timezone: str = "UTC",
):
    """A `winrate-report` deployment on a cron schedule, ready for `prefect.serve`."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    return winrate_report.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters={"run": run, "config": config},
        description="win-rate report of a run (or the latest run) on a schedule",
        entrypoint_type=EntrypointType.MODULE_PATH,  # as the other deployments: any cwd
    )
