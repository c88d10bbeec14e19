"""The process environment every `iro` command sets up before the library runs."""

from __future__ import annotations

import logging
import os

LIBRARY_LOGGERS = "iro"


def prepare_environment() -> None:
    # Library modules log through the standard `logging`; Prefect forwards these loggers to the
    # console and, when a server is used, to the UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", LIBRARY_LOGGERS)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # transformers' per-load reports (e.g. the layers a truncated value trunk leaves out) and
    # vLLM's start-up chatter drown the pipeline's own progress lines.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    configure_logging()


def configure_logging() -> None:
    """Show the library's INFO lines (stage starts, reuse, throughput) beside Prefect's own."""
    for name in LIBRARY_LOGGERS.split(","):
        logging.getLogger(name).setLevel(logging.INFO)
