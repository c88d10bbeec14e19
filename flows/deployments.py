"""The deployments `iro serve` registers and serves (prefect.yaml describes the same for workers).

- `iro-iteration/default`, `iro-pipeline/default`, `iro-baselines/default`: triggered by hand from
  the UI or `prefect deployment run`; their default `config` is the one `iro serve` was given.
- `winrate-report/daily`: the report flow on a cron schedule. It lives in `flows/report.py`, whose
  contract with this module is one function, `report_deployment(cron: str) -> RunnerDeployment`,
  returning the deployment named `daily` with that cron schedule. It is served only when that
  module is importable and has the function, so this module works with or without it.

No deployment has a concurrency limit: different runs proceed in parallel, and work on the same
run is serialised by the artifact store's run lock inside the flows.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows.baselines import iro_baselines
from flows.iteration import iro_iteration
from flows.pipeline import iro_pipeline

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "default"
REPORT_MODULE = "flows.report"
REPORT_FACTORY = "report_deployment"


def report_deployment(cron: str) -> RunnerDeployment | None:
    """`flows.report.report_deployment(cron)`, or None when the report flow is not installed."""
    if importlib.util.find_spec(REPORT_MODULE) is None:
        log.info("%s is not installed: winrate-report/daily is not served", REPORT_MODULE)
        return None
    factory = getattr(importlib.import_module(REPORT_MODULE), REPORT_FACTORY, None)
    if factory is None:
        log.warning("%s has no %s(cron): the report is not served", REPORT_MODULE, REPORT_FACTORY)
        return None
    return factory(cron)


def build_deployments(
    config: str, report_cron: str, pause_report: bool = False
) -> list[RunnerDeployment]:
    """The IRO deployments with `config` as their default run config, plus the report if any."""
    deployments = [
        flow.to_deployment(
            name=DEPLOYMENT_NAME,
            parameters={"config": config},
            tags=["iro"],
            # import by module name: works wherever the project is installed, whatever the cwd
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for flow in (iro_iteration, iro_pipeline, iro_baselines)
    ]
    report = report_deployment(report_cron)
    if report is not None:
        if pause_report:
            report.paused = True
        deployments.append(report)
    return deployments


def serve_deployments(config: str, report_cron: str, pause_report: bool, limit: int) -> None:
    """Register the deployments and execute their runs here until interrupted."""
    serve(*build_deployments(config, report_cron, pause_report), limit=limit)
