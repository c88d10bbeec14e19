"""Operating IRO through a real Prefect server: `iro server start`, `iro serve`, the `prefect` CLI
and the UI in headless Chromium. One server and one serve process for the whole module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    LogFilter,
    LogFilterFlowRunId,
)

from tests.postgres import PostgresDatabase, postgres_database
from tests.test_end_to_end import STAGES, tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "test-output"
PREFECT = [sys.executable, "-m", "prefect"]
NO_EVAL = json.dumps({"overrides": {"eval.enabled": False}})  # the iteration's stages only
ITERATION_KEYS = {
    f"e2e-iter-1-{stage}-{kind}"
    for stage, kinds in {
        "rollout": ("summary", "table", "progress"),
        "score": ("summary", "table"),
        "reweight": ("summary", "table"),
        "value": ("summary",),
    }.items()
    for kind in kinds
}


@dataclass
class Server:
    url: str
    api_url: str
    env: dict[str, str]
    store: Path
    logs: Path
    database: PostgresDatabase | None = None  # None: SQLite under PREFECT_HOME

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.api_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def background(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own session, stopped with all its children however the block ends."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
        return response.status == 200


def wait_for(what: str, ready, proc: subprocess.Popen, log: Path, timeout: float) -> float:
    """Poll `ready()` until true; fail with the process's log if it dies or times out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            pytest.fail(
                f"{what}: process exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if ready():
                return time.monotonic() - started
        except Exception:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what}: not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def served(
    tmp: Path,
    config: Path,
    serve_env: dict[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[Server]:
    """A Prefect server on a free loopback port (PREFECT_HOME `tmp/prefect`; its database SQLite
    there, or `database_url`) and `iro serve --config config` registered with it, both stopped
    when the block ends. `serve_env` is added to the serving process's environment only (the
    server and `Server.env` never see it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_API_URL": f"{url}/api",
        # served flow runs import this checkout, not whatever else is installed
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    server_log, serve_log = tmp / "server.log", tmp / "serve.log"
    start = [sys.executable, "-m", "iro.app.cli", "server", "start", "--port", str(port)]
    start += ["--database-url", database_url] if database_url else []
    with background(start, env, server_log) as proc:
        seconds = wait_for("prefect server", lambda: healthy(url), proc, server_log, 180)
        print(f"prefect server healthy after {seconds:.1f} s")
        serve = [sys.executable, "-m", "iro.app.cli", "serve", "--config", str(config)]
        with (
            background(serve, {**env, **(serve_env or {})}, serve_log) as serving,
            SyncPrefectClient(f"{url}/api") as client,
        ):
            wait_for(
                "iro serve",
                lambda: client.read_deployment_by_name("iro-iteration/default"),
                serving,
                serve_log,
                180,
            )
            yield Server(url, f"{url}/api", env, tmp / "store", tmp)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    """Every test of this module on a server with SQLite (Prefect's default) and with PostgreSQL
    (what a shared deployment uses)."""
    tmp = tmp_path_factory.mktemp(f"prefect-{request.param}")
    with ExitStack() as stack:
        database = None
        if request.param == "postgresql":
            database = stack.enter_context(postgres_database(free_port()))
        url = database.url if database else None
        running = stack.enter_context(served(tmp, tiny_config(tmp), database_url=url))
        yield replace(running, database=database)


def deployment_run(
    server: Server, *args: str, deployment: str = "iro-iteration/default"
) -> tuple[subprocess.CompletedProcess, UUID | None]:
    result = subprocess.run(
        [*PREFECT, "deployment", "run", deployment, *args],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    return result, UUID(match.group(1)) if match else None


def run_logs(server: Server, flow_run_id: UUID) -> str:
    """The flow run's log as the UI shows it (waits for the final line to arrive)."""
    with server.client() as client:
        for _ in range(20):
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            text = "\n".join(f"{log.name}: {log.message}" for log in logs)
            if "Finished in state" in text:
                break
            time.sleep(0.5)
    return text


def trigger_iteration_1(server: Server) -> UUID:
    started = time.monotonic()
    result, flow_run_id = deployment_run(
        server, "--param", "iteration=1", "--params", NO_EVAL, "--watch", "--watch-timeout", "800"
    )
    print(f"iteration 1 through the deployment: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert flow_run_id is not None and "Completed" in result.stdout
    return flow_run_id


@pytest.fixture(scope="module")
def first_run(server) -> UUID:
    return trigger_iteration_1(server)


def test_iteration_through_a_deployment_then_a_rerun_reuses_every_stage(server, first_run):
    with server.client() as client:
        flow_run = client.read_flow_run(first_run)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first_run]))
        )
    assert flow_run.state.is_completed() and flow_run.name == "e2e-iter-1"
    assert {a.key for a in artifacts} == ITERATION_KEYS
    for stage in STAGES[:4]:
        built = [p for p in (server.store / stage).iterdir() if not p.name.startswith(".")]
        assert len(built) == 1 and (built[0] / "manifest.json").is_file()
    summary = json.loads((server.store / "runs" / "e2e" / "iteration-1.json").read_text())
    assert Path(summary["policy"]["value_models"][0], "model.safetensors").is_file()
    first_log = run_logs(server, first_run)
    assert (
        "iro.pipeline.runner: building rollout artifact" in first_log
    )  # library logs reach the UI

    second = trigger_iteration_1(server)
    log = run_logs(server, second)
    assert log.count("iro.pipeline.runner: reusing") == 4 and "building" not in log, log


def test_flow_runs_are_rows_of_the_servers_database(server, first_run):
    """The server keeps its state where it was told to: PostgreSQL when given, else SQLite."""
    sql = f"select count(*) from flow_run where id = '{first_run}'"
    if server.database is not None:
        assert server.database.query(sql) == ["1"]
        assert not (Path(server.env["PREFECT_HOME"]) / "prefect.db").exists()
    else:
        db = sqlite3.connect(Path(server.env["PREFECT_HOME"]) / "prefect.db")
        try:
            assert db.execute(sql).fetchone() == (1,)
        finally:
            db.close()


def iteration_runs(server: Server) -> set[UUID]:
    """Ids of every flow run the server holds for the iro-iteration deployment."""
    with server.client() as client:
        deployment = client.read_deployment_by_name("iro-iteration/default")
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    return {run.id for run in runs}


def test_a_bad_parameter_is_rejected_before_any_run(server):
    before = iteration_runs(server)
    result, flow_run_id = deployment_run(server, "--param", "iteration=0")
    output = " ".join((result.stdout + result.stderr).split())  # the CLI wraps long lines
    assert result.returncode != 0 and flow_run_id is None, output
    # the server's schema check (Iteration = int >= 1), not any message naming the deployment
    assert (
        "Error creating flow run: Validation failed for field 'iteration'. "
        "Failure reason: 0 is less than the minimum of 1" in output
    ), output
    assert iteration_runs(server) == before  # no flow run was created


def test_iteration_without_its_predecessor_fails_naming_it(server):
    other_seed = json.dumps({"overrides": {"seed": 5, "eval.enabled": False}})
    result, flow_run_id = deployment_run(
        server, "--param", "iteration=2", "--params", other_seed, "--watch"
    )
    assert result.returncode != 0 and flow_run_id is not None
    log = run_logs(server, flow_run_id)
    assert "iteration 1 of run 'e2e' has not finished" in log, log
    assert "building" not in log


def test_a_finished_run_answers_prompts_through_the_decode_deployment(server, first_run):
    prompts = ["Return the number of items.", "Open a file and return a stream."]
    request = json.dumps({"run": "e2e", "prompts": prompts, "strengths": {"e2e": 2.0}})
    result, flow_run_id = deployment_run(
        server, "--params", request, "--watch", deployment="iro-decode/default"
    )
    assert result.returncode == 0 and "Completed" in result.stdout, result.stdout[-3000:]
    with server.client() as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert artifact.key == "e2e-decode" and [row["prompt"] for row in rows] == prompts
    assert all(row["iteration"] == 1 and isinstance(row["response"], str) for row in rows), rows


def chromium(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run `make ui-deps` (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="iro-chromium-") as profile:
        return subprocess.run(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                *args,
            ],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip


def test_the_ui_shows_the_flow_run_and_its_artifacts(server, first_run):
    OUTPUT.mkdir(exist_ok=True)
    page = f"{server.url}/runs/flow-run/{first_run}"
    screenshot = OUTPUT / "prefect-ui-flow-run.png"
    screenshot.unlink(missing_ok=True)
    shot = chromium("--window-size=1400,1000", f"--screenshot={screenshot}", page)
    assert screenshot.is_file(), shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000

    dom = chromium("--dump-dom", page).stdout
    assert "e2e-iter-1" in dom and "Can't connect" not in dom, dom[-2000:]
    artifact = chromium("--dump-dom", f"{server.url}/artifacts/key/e2e-iter-1-score-summary").stdout
    assert "e2e-iter-1-score-summary" in artifact, artifact[-2000:]
