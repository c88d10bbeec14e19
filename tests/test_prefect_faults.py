"""Fault guarantees of the served deployments, on a real Prefect server (docs/reliability.md):

- two flow runs of one iteration triggered at once through the `iro-iteration` deployment both
  complete, one building and the other reusing, with one artifact per stage in the store;
- the API key in the serving process's environment, really sent to the judge's endpoint, never
  reaches the Prefect server: not its database (SQLite and its WAL/journal), its home, the flow
  run's parameters or logs, nor the store and temporary files.

One server and one `iro serve` process for the module (the helpers of tests/test_prefect_server.py),
on the tiny transformers-engine config of tests/test_remote_faults.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from iro.core.config import load_config
from iro.core.store.local import ArtifactStore
from tests.http_stub import StubServer, chat_completion, json_reply, stub_server
from tests.test_prefect_server import Server, deployment_run, served
from tests.test_remote_faults import STAGES, finished, judge_reward, leftovers, tiny_config

pytestmark = pytest.mark.slow

KEY = "sk-prefect-planted-4b9e2d7c1a6f3e8d5c0b"


@pytest.fixture(scope="module")
def judge() -> Iterator[StubServer]:
    """An OpenAI-compatible judge that rates every response 7 and records each request's
    Authorization header (the proof that the key was really sent)."""

    def respond(handler, request):
        handler.server.authorizations.append(handler.headers.get("Authorization", ""))
        return json_reply(chat_completion("7", model="judge"))

    with stub_server(respond, authorizations=[]) as server:
        yield server


def key_variables(config: object) -> set[str]:
    """Every `*api_key_env` value the config names (the environment variables holding keys)."""
    if isinstance(config, dict):
        found = {v for k, v in config.items() if k.endswith("api_key_env") and isinstance(v, str)}
        return found.union(*(key_variables(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(key_variables(v) for v in config))
    return set()


@pytest.fixture(scope="module")
def served_with_key(tmp_path_factory, tiny_lm, judge) -> Iterator[Server]:
    """`iro serve` with the planted key in its environment (OPENAI_API_KEY and every variable the
    config names), its temporary files in `<tmp>/tmp`; its default config scores with the judge.
    The server process, the `prefect` CLI and this test process never have the key."""
    tmp = tmp_path_factory.mktemp("prefect-faults")
    settings = tiny_config(tmp, tiny_lm, judge_reward(judge.url))
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(settings))
    (tmp / "tmp").mkdir()
    variables = {"OPENAI_API_KEY"} | key_variables(load_config(config).model_dump())
    serve_env = {
        **dict.fromkeys(variables, KEY),
        "TMPDIR": str(tmp / "tmp"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    assert KEY not in os.environ.values()
    with served(tmp, config, serve_env) as server:
        yield server


def flow_run_logs(client: SyncPrefectClient, flow_run_id: UUID) -> str:
    """Every log line of the flow run the server holds (paged: the API caps a page at 200)."""
    lines: list[str] = []
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    while page := client.read_logs(log_filter, limit=200, offset=len(lines)):
        lines += [f"{log.name}: {log.message}" for log in page]
    return "\n".join(lines)


def wait_until(what: str, ready, timeout: float, explain) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready():
            return time.monotonic() - started
        time.sleep(1)
    pytest.fail(f"{what}: not after {timeout} s\n{explain()}")


def test_two_triggers_of_one_iteration_end_with_one_set_of_artifacts(
    served_with_key, tiny_lm, tmp_path
):
    """Two flow runs of `iro-iteration/default` (same config, run name and iteration 1) are
    created back to back and executed by the served process: `iro serve --limit 2` (the default)
    lets its runner execute two flow runs at once, each in its own subprocess, and it picks both
    up on its next poll. So that they really overlap whatever the timing, this test holds the
    run's lock until both flow runs are running and have logged that they wait for it; then one
    builds every stage and the other, waiting for it, reuses every stage."""
    reward = [{"type": "length_penalty", "options": {"target_words": 2}}]
    config = tmp_path / "twice.yaml"
    config.write_text(
        yaml.safe_dump({**tiny_config(tmp_path, tiny_lm, reward), "run_name": "twice"})
    )
    store = tmp_path / "store"
    parameters = {"config": str(config), "iteration": 1, "run_name": "twice"}
    lock = ArtifactStore(store).run_lock("twice")
    lock.__enter__()
    released = False
    started = time.monotonic()
    try:
        with served_with_key.client() as client:
            deployment = client.read_deployment_by_name("iro-iteration/default")
            ids = [
                client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id
                for _ in range(2)
            ]

            def runs():
                return client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
                )

            def logs() -> list[str]:
                return [flow_run_logs(client, i) for i in ids]

            def explain() -> str:
                states = {r.name: r.state_name for r in runs()}
                return f"{states}\n" + "\n\n".join(t[-3000:] for t in logs())

            def both_waiting() -> bool:
                if any(r.state.is_final() for r in runs()):
                    pytest.fail("a flow run ended while the lock was held:\n" + explain())
                waiting = f"run 'twice' is busy in process {os.getpid()} on"
                return all(waiting in text for text in logs())

            seconds = wait_until(
                "both flow runs waiting for the run lock", both_waiting, 400, explain
            )
            print(f"both flow runs running and waiting on the lock after {seconds:.1f} s")
            assert all(r.state.is_running() for r in runs())
            lock.__exit__(None, None, None)
            released = True
            wait_until(
                "both flow runs finished",
                lambda: all(r.state.is_final() for r in runs()),
                600,
                explain,
            )
            print(f"two concurrent flow runs: {time.monotonic() - started:.1f} s")
            flow_runs = {r.id: r for r in runs()}

            def every_stage_logged() -> bool:
                # a run's last log lines reach the server after its final state (batched)
                return all(
                    f"building {s} artifact" in text or f"reusing {s} artifact" in text
                    for text in logs()
                    for s in STAGES
                )

            wait_until("every stage's log line on the server", every_stage_logged, 60, explain)
            texts = dict(zip(ids, logs(), strict=True))
    finally:
        if not released:
            lock.__exit__(None, None, None)
    report = "\n\n".join(t[-3000:] for t in texts.values())
    assert [flow_runs[i].state_name for i in ids] == ["Completed", "Completed"], report
    assert {flow_runs[i].name for i in ids} == {"twice-iter-1"}
    first, second = flow_runs[ids[0]], flow_runs[ids[1]]
    assert first.start_time < second.end_time and second.start_time < first.end_time  # overlap
    builder = [i for i in ids if "building rollout artifact" in texts[i]]
    assert len(builder) == 1, report
    reuser = next(i for i in ids if i != builder[0])
    assert [texts[builder[0]].count(f"building {s} artifact") for s in STAGES] == [1, 1, 1, 1]
    assert [texts[reuser].count(f"reusing {s} artifact") for s in STAGES] == [1, 1, 1, 1], report
    assert "building" not in texts[reuser], report
    # exactly one artifact per stage: the directories under the store's stage folders ...
    built = {s: [p for p in (store / s).iterdir() if not p.name.startswith(".")] for s in STAGES}
    assert {s: len(paths) for s, paths in built.items()} == dict.fromkeys(STAGES, 1), built
    # ... each verified against its manifest, with no staging left behind
    assert {s: len(found) for s, found in finished(store).items()} == dict.fromkeys(STAGES, 1)
    assert leftovers(store) == []
    record = json.loads((store / "runs" / "twice" / "iteration-1.json").read_text())
    assert {s: Path(p).name for s, p in record["artifacts"].items()} == {
        s: paths[0].name for s, paths in built.items()
    }


def every_file(*roots: Path) -> list[Path]:
    return sorted({p for root in roots for p in root.rglob("*") if p.is_file()})


def test_the_api_key_never_reaches_the_prefect_server(served_with_key, judge):
    """The served flow run scores with the judge, sending the planted key from the serving
    process's environment; afterwards no byte of it is in any file under PREFECT_HOME (the SQLite
    database, its -wal/-shm or -journal, logs, storage), the store, the serving processes'
    temporary directory and console logs, nor in what the API returns for the flow run."""
    before = len(judge.authorizations)
    result, flow_run_id = deployment_run(served_with_key, "--param", "iteration=1", "--watch")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert flow_run_id is not None and "Completed" in result.stdout
    sent = judge.authorizations[before:]
    assert len(sent) >= 4 and set(sent) == {f"Bearer {KEY}"}  # the key was really used

    with served_with_key.client() as client:
        wait_until(
            "the flow run's final log line",
            lambda: "Finished in state" in flow_run_logs(client, flow_run_id),
            30,
            lambda: flow_run_logs(client, flow_run_id)[-3000:],
        )
        flow_run = client.read_flow_run(flow_run_id)
        log = flow_run_logs(client, flow_run_id)
        seen = {
            "flow run": flow_run.model_dump_json(),
            "parameters": json.dumps(flow_run.parameters),
            "logs": log,
            "task runs": json.dumps(
                [
                    t.model_dump(mode="json")
                    for t in client.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                    )
                ]
            ),
            "artifacts": json.dumps(
                [
                    a.model_dump(mode="json")
                    for a in client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                        )
                    )
                ]
            ),
            "deployment": client.read_deployment(flow_run.deployment_id).model_dump_json(),
            "variables": json.dumps([v.model_dump(mode="json") for v in client.read_variables()]),
        }
    assert "iro.pipeline.runner: building score artifact" in log  # the scoring ran in this run
    assert [what for what, text in seen.items() if KEY in text] == []

    home = served_with_key.logs / "prefect"
    files = every_file(served_with_key.logs)  # PREFECT_HOME, store, tmp, server.log, serve.log
    names = {p.relative_to(served_with_key.logs).as_posix() for p in files}
    assert "prefect/prefect.db" in names and (home / "prefect.db").stat().st_size > 0
    assert {"store/runs/faults/iteration-1.json", "serve.log", "server.log"} <= names
    print(f"searched {len(files)} files, {sum(p.stat().st_size for p in files)} bytes:")
    print(" ".join(sorted(n for n in names if n.startswith("prefect/"))))
    database = b"".join(p.read_bytes() for p in files if p.name.startswith("prefect.db"))
    # the search reads what the server stored: the flow run's name and its library log lines
    assert b"faults-iter-1" in database and b"building score artifact" in database
    secret = KEY.encode()
    assert [str(p) for p in files if secret in p.read_bytes()] == []
