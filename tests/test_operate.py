"""Fast checks of the Prefect operating layer: deployments, parameter schema, server environment
and the per-run lock. The real server is exercised in test_prefect_server.py (slow).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from iro.app.server import server_environment
from iro.core.config import ConfigError
from iro.core.store.local import ArtifactStore
from iro.flows.deployments import build_deployments


def test_deployments_have_typed_parameters_and_the_serve_config_as_default(monkeypatch):
    deployments = build_deployments("configs/demo.yaml", "0 6 * * *")
    assert [(d.flow_name, d.name) for d in deployments] == [
        ("iro-iteration", "default"),
        ("iro-pipeline", "default"),
        ("iro-baselines", "default"),
        ("vas", "default"),
        ("ivl", "default"),
        ("iro-decode", "default"),
        ("winrate-report", "daily"),
    ]
    assert all(d.parameters == {"config": "configs/demo.yaml"} for d in deployments[:-1])
    schema = deployments[0]._parameter_openapi_schema.model_dump()["properties"]
    assert schema["iteration"]["type"] == "integer" and schema["iteration"]["minimum"] == 1
    assert schema["iteration"]["description"].startswith("k;")
    assert {"config", "iteration", "run_name", "overrides"} == set(schema)


def test_the_decode_deployment_asks_for_a_run_and_prompts_and_takes_a_strength_per_run():
    decode = build_deployments("configs/demo.yaml", "0 6 * * *")[-2]
    schema = decode._parameter_openapi_schema.model_dump()
    assert set(schema["required"]) == {"run", "prompts"}
    fields = schema["properties"]
    assert fields["prompts"]["minItems"] == 1
    strength = fields["strengths"]["anyOf"][0]["additionalProperties"]
    assert strength["type"] == "number" and strength["minimum"] == 0
    assert fields["strengths"]["description"].startswith("strength per run name")


def test_the_report_runs_on_its_cron_schedule_and_can_be_deployed_paused():
    report = build_deployments("configs/demo.yaml", "0 7 * * *", pause_report=True)[-1]
    assert report.paused
    assert [s.schedule.cron for s in report.schedules] == ["0 7 * * *"]
    assert not build_deployments("configs/demo.yaml", "0 7 * * *")[-1].paused


def test_server_environment_keeps_the_ui_on_the_chosen_port_and_checks_the_database_url():
    env = server_environment("127.0.0.1", 4321, None)
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_HOME"].endswith("prefect")
    postgres = "postgresql+asyncpg://iro:secret@db/prefect"
    assert (
        server_environment("127.0.0.1", 4321, postgres)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
        == postgres
    )
    with pytest.raises(ConfigError, match="must start with one of"):
        server_environment("127.0.0.1", 4321, "postgresql://iro@db/prefect")


def test_the_run_lock_serialises_one_run_and_not_different_runs(tmp_path, caplog):
    store = ArtifactStore(tmp_path)
    acquired = threading.Event()

    def second_holder() -> None:
        with store.run_lock("a"):
            acquired.set()

    caplog.set_level(logging.INFO, logger="iro.core.store.local")
    thread = threading.Thread(target=second_holder)
    with store.run_lock("a"):
        with store.run_lock("b"):  # a different run does not wait
            pass
        thread.start()
        deadline = time.monotonic() + 5
        while "run 'a' is busy" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "run 'a' is busy" in caplog.text and not acquired.is_set()
    thread.join(5)
    assert acquired.is_set()
