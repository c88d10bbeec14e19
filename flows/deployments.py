"""The deployments `iro serve` registers and serves (prefect.yaml describes the same for workers).

- `iro-iteration/default`, `iro-pipeline/default`, `iro-baselines/default`, `vas/default`,
  `ivl/default`: triggered by hand from the UI or `prefect deployment run`; their default `config`
  is the one `iro serve` was given.
- `iro-decode/default`: a finished run's aligned policy answering prompts, with other runs' value
  models and a strength per run chosen per request.
- `winrate-report/daily`: the report flow (flows/report.py) on a cron schedule, optionally paused.

No deployment has a concurrency limit: different runs proceed in parallel, and work on the same
run is serialised by the artifact store's run lock inside the flows.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from iro.flows.baselines import iro_baselines
from iro.flows.decode import iro_decode
from iro.flows.iteration import iro_iteration
from iro.flows.ivl import ivl_pipeline
from iro.flows.pipeline import iro_pipeline
from iro.flows.report import report_deployment
from iro.flows.vas import vas_pipeline

DEPLOYMENT_NAME = "default"


def build_deployments(
    config: str, report_cron: str, pause_report: bool = False
) -> list[RunnerDeployment]:
    """The IRO deployments with `config` as their default run config, plus the scheduled report."""
    deployments = [
        flow.to_deployment(
            name=DEPLOYMENT_NAME,
            parameters={"config": config},
            tags=["iro"],
            # import by module name: works wherever the project is installed, whatever the cwd
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for flow in (
            iro_iteration,
            iro_pipeline,
            iro_baselines,
            vas_pipeline,
            ivl_pipeline,
            iro_decode,
        )
    ]
    report = report_deployment(report_cron)
    report.paused = pause_report
    return [*deployments, report]


def serve_deployments(config: str, report_cron: str, pause_report: bool, limit: int) -> None:
    """Register the deployments and execute their runs here until interrupted."""
    serve(*build_deployments(config, report_cron, pause_report), limit=limit)
