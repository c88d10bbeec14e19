"""Parameters shared by the IRO flows, typed so that the Prefect UI's run form shows sensible
fields and the server rejects a bad value (`prefect deployment run` validates against the schema).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from prefect.runtime import flow_run
from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS
from pydantic import Field

from iro.core.config import RUN_NAME_PATTERN, RunConfig, load_config

DEFAULT_CONFIG = "configs/demo.yaml"

# Constraints travel into the deployment's parameter schema; descriptions come from each flow's
# "Args:" docstring section, which is what Prefect shows in the run form.
ConfigPath = Annotated[str, Field(min_length=1)]
ExistingRun = Annotated[str, Field(pattern=RUN_NAME_PATTERN)]
RunName = ExistingRun | None
Overrides = dict[str, Any] | None
Iteration = Annotated[int, Field(ge=1)]


def show_library_logs() -> None:
    """Let the library's INFO lines (stage starts, "reusing", throughput) through: Prefect
    attaches its API handler to PREFECT_LOGGING_EXTRA_LOGGERS but leaves their level at the root's
    WARNING, and a served flow run is a fresh process that `iro`'s CLI never configured."""
    for name in PREFECT_LOGGING_EXTRA_LOGGERS.value() or []:
        library_logger = logging.getLogger(name)
        if library_logger.level == logging.NOTSET:
            library_logger.setLevel(logging.INFO)


def run_config(config: str, run_name: str | None, overrides: dict[str, Any] | None) -> RunConfig:
    """The config an entry flow works on: the file, its overrides, then the run name if one is
    given. Parsed here once per command; subflows receive the validated `RunConfig`."""
    show_library_logs()
    merged = dict(overrides or {})
    if run_name:
        merged["run_name"] = run_name
    return load_config(config, merged)


def flow_run_namer(suffix: str) -> Callable[[], str]:
    """A `flow_run_name` callable: `<run name>-<suffix>`, the suffix formatted with the parameters.

    The UI then lists runs as, for example, `demo-iter-2`, so a run and its iteration are visible
    without opening it.
    """

    def name() -> str:
        params = flow_run.parameters
        if "cfg" in params:  # a subflow, handed the validated config
            cfg = params["cfg"]
            run = cfg.run_name if isinstance(cfg, RunConfig) else cfg["run_name"]
        else:
            run = (
                params.get("run_name")
                or run_config(
                    params.get("config", DEFAULT_CONFIG), None, params.get("overrides")
                ).run_name
            )
        return f"{run}-{suffix.format(**params)}"

    return name
