"""`iro server start` and `iro serve`: operate the flows through a real Prefect server.

`iro server start` is a thin wrapper over `prefect server start --host 127.0.0.1` that keeps the
server's state in the project (PREFECT_HOME defaults to `.iro/prefect`, so its SQLite database sits
beside the artifact store rather than in ~/.prefect) and takes a PostgreSQL URL for shared use.
`iro serve` registers the deployments (see `flows/deployments.py`) with that server and runs
their flow runs in subprocesses of its own. No Prefect import here: the environment must be set
before Prefect reads its settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

from iro.app.environment import prepare_environment
from iro.core.config import ConfigError, load_config

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEFAULT_HOME = ".iro/prefect"
DATABASE_URL_VAR = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
# Prefect's server talks to its database through async drivers only.
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
DEFAULT_REPORT_CRON = "0 6 * * *"


def api_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", DEFAULT_HOME)).expanduser().resolve()


def server_environment(host: str, port: int, database_url: str | None) -> dict[str, str]:
    """The server's environment: the project's PREFECT_HOME, and the database URL if given.

    The UI finds the API through PREFECT_UI_API_URL, which otherwise assumes port 4200 whatever
    `--port` says: the browser would show "Can't connect to Server API".
    """
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home()),
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api_url(host, port),
    }
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if database_url:
        env[DATABASE_URL_VAR] = database_url
    url = env.get(DATABASE_URL_VAR)
    if url and not url.startswith(tuple(f"{s}://" for s in DATABASE_SCHEMES)):
        raise ConfigError(
            f"{DATABASE_URL_VAR} must start with one of "
            f"{', '.join(s + '://' for s in DATABASE_SCHEMES)}, got {url.split('://')[0]}://..."
        )
    return env


def database_description(env: dict[str, str]) -> str:
    url = env.get(DATABASE_URL_VAR)
    if not url:
        return f"SQLite at {Path(env['PREFECT_HOME']) / 'prefect.db'}"
    return f"{url.split('://')[0]} (from {DATABASE_URL_VAR})"  # never print the credentials


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def start_server(host: str, port: int, database_url: str | None) -> NoReturn:
    """Replace this process by the Prefect server, so signals (Ctrl-C, kill) reach it directly."""
    env = server_environment(host, port, database_url)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    print(f"Prefect server: UI http://{host}:{port}, database {database_description(env)}")
    print(f"  in other shells: export PREFECT_API_URL={api_url(host, port)}", flush=True)
    os.execve(sys.executable, server_command(host, port), env)


def check_server(
    url: str,
    timeout: float = 5.0,
    fix: str = "set PREFECT_API_URL to the server's API URL",
) -> None:
    """Fail with a clear message, before registering anything, when no server answers at `url`."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
    except (urllib.error.URLError, OSError, ValueError):  # ValueError: not a URL at all
        pass
    raise ConfigError(
        f"no Prefect server answers at {url}; start one with `iro server start` or {fix}"
    )


def check_api_from_environment() -> None:
    """`iro run` and friends use the server at $PREFECT_API_URL when it is set (else a temporary
    in-process one): check that it answers before any work, instead of failing in Prefect's
    client once the flow starts."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        check_server(
            url, fix="unset PREFECT_API_URL to run with a temporary in-process Prefect API"
        )


def _cmd_server_start(args: argparse.Namespace) -> int:
    return start_server(args.host, args.port, args.database_url)


def _cmd_serve(args: argparse.Namespace) -> int:
    load_config(args.config)  # a bad default config fails here, not in every flow run
    os.environ.setdefault("PREFECT_HOME", str(prefect_home()))
    os.environ["PREFECT_API_URL"] = args.api_url or os.environ.get("PREFECT_API_URL") or api_url()
    check_server(os.environ["PREFECT_API_URL"])
    # served flow runs inherit this environment: library logs reach the UI
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    prepare_environment()
    from iro.flows.deployments import serve_deployments

    serve_deployments(args.config, args.report_cron, args.pause_report, args.limit)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `iro server start` and `iro serve` on the `iro` command's subparsers."""
    server = sub.add_parser("server", help="the Prefect server (UI and API)")
    actions = server.add_subparsers(dest="server_command", required=True)
    start = actions.add_parser("start", help="start a Prefect server with the project's state")
    start.add_argument("--host", default=DEFAULT_HOST)
    start.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument(
        "--database-url",
        help=f"e.g. postgresql+asyncpg://user:pass@host/db (default: {DATABASE_URL_VAR} or SQLite)",
    )
    start.set_defaults(func=_cmd_server_start)

    serve = sub.add_parser("serve", help="register the deployments with a server and serve them")
    serve.add_argument(
        "--config", default="configs/demo.yaml", help="the deployments' default run config"
    )
    serve.add_argument("--api-url", help=f"default: $PREFECT_API_URL, else {api_url()}")
    serve.add_argument(
        "--report-cron", default=DEFAULT_REPORT_CRON, help="schedule of winrate-report/daily"
    )
    serve.add_argument(
        "--pause-report", action="store_true", help="register the report's schedule paused"
    )
    serve.add_argument(
        "--limit", type=int, default=2, help="flow runs executed at once by this process"
    )
    serve.set_defaults(func=_cmd_serve)
