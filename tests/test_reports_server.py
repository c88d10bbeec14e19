"""Judge and AlpacaEval reports against a real vLLM OpenAI-compatible server on loopback."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from iro.core.config import JudgeConfig, ReportConfig
from iro.reports.run import build_report
from iro.reward.openai_client import MissingAPIKeyError
from tests.report_helpers import make_run

pytestmark = pytest.mark.slow


def _judge(server, **extra) -> JudgeConfig:
    return JudgeConfig(model=server.model, base_url=server.base_url, max_retries=1, **extra)


def _files_text(root) -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for p in root.rglob("*")
        if p.is_file() and p.suffix != ".parquet"
    )


def test_judge_report_parses_and_never_leaks_the_key(openai_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    store = make_run(tmp_path / "store")
    cfg = ReportConfig(
        baseline="base",
        pairwise_judge="summary",
        judge=_judge(openai_server, constrain_format=True),
    )
    report = build_report(store, "demo", cfg, api_key=openai_server.api_key)
    row = report.table().set_index("kind").loc["judge"]
    assert row["wins"] + row["ties"] + row["losses"] + row["failures"] == 4
    assert row["failures"] == 0 and row["win_rate"] is not None
    assert 0.0 <= row["ci_low"] <= row["win_rate"] <= row["ci_high"] <= 1.0
    assert row["prompt_version"].startswith("dpo-summary-") and row["judge"] == openai_server.model
    assert report.metrics["judge_requests"] == 8  # 4 pairs, both orders
    details = __import__("pandas").read_parquet(report.file("judge-iro-iter1.parquet"))
    assert details["verdict_method_first"].isin(["A", "B"]).all()
    assert openai_server.api_key not in _files_text(store.root)
    assert openai_server.api_key not in caplog.text


def test_garbage_answers_are_failures_not_a_win_rate(openai_server, tmp_path):
    store = make_run(tmp_path / "store")
    # one token can never hold "Preferred: A": every answer is unparsable
    cfg = ReportConfig(pairwise_judge="summary", judge=_judge(openai_server, max_tokens=1))
    report = build_report(store, "demo", cfg, api_key=openai_server.api_key)
    judged = report.table().query("kind == 'judge'")
    assert (judged["failures"] == 4).all()
    assert judged["win_rate"].isna().all() and judged["ci_low"].isna().all()
    assert judged["note"].str.startswith("8 unparsable answers").all()


def test_alpaca_eval_runs_end_to_end_with_a_local_annotator(openai_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    store = make_run(tmp_path / "store")
    cfg = ReportConfig(
        baseline="reference", methods=["iro-iter1"], reward_winrate=False, alpaca_eval=True,
        judge=_judge(openai_server),
    )  # fmt: skip
    report = build_report(store, "demo", cfg, api_key=openai_server.api_key)
    row = report.table().iloc[0]
    assert row["kind"] == "alpaca_eval" and row["metric"] == "win_rate"  # not the 805 prompts
    assert "plain win rate" in row["note"]
    assert row["wins"] + row["ties"] + row["losses"] + row["failures"] == 4
    outputs = report.path / "alpaca-eval-iro-iter1"
    assert (outputs / "model_outputs.json").is_file() and (outputs / "annotations.json").is_file()
    assert "client_config_path" not in (outputs / "iro_pairwise" / "configs.yaml").read_text()
    assert openai_server.api_key not in _files_text(store.root)
    assert openai_server.api_key not in caplog.text


class RecordingServer(ThreadingHTTPServer):
    """Loopback HTTP server that records every request and answers each with a 500."""

    def __init__(self):
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                outer.seen.append(f"{self.command} {self.path}")
                self.send_response(500)
                self.end_headers()

            do_GET = do_POST = _record

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_flow_stops_on_a_missing_key_before_any_work(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from iro.flows.report import winrate_report

    store = make_run(tmp_path / "store")
    key_env = "IRO_TEST_JUDGE_KEY_THAT_IS_NOT_SET"
    monkeypatch.delenv(key_env, raising=False)
    fake = RecordingServer()
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    config = tmp_path / "report.yaml"
    judge = {
        "model": "fake-judge",
        "base_url": f"http://127.0.0.1:{fake.server_address[1]}/v1",
        "api_key_env": key_env,
        "max_retries": 0,
    }
    report = {"baseline": "base", "pairwise_judge": "summary", "judge": judge}
    config.write_text(yaml.safe_dump({"store": {"root": str(store.root)}, "report": report}))
    try:
        with (
            temporary_settings(
                {
                    PREFECT_HOME: tmp_path / "prefect",
                    PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results",
                }
            ),
            prefect_test_harness(server_startup_timeout=120),
        ):
            state = winrate_report(run="demo", config=str(config), return_state=True)
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts()
    finally:
        fake.shutdown()
        fake.server_close()

    assert state.is_failed()
    with pytest.raises(MissingAPIKeyError, match=key_env):
        state.result()
    assert fake.seen == []  # no judge request was made
    assert not (store.root / "report").exists()  # no report artifact, not even a staging dir
    # nor a published one (Prefect's own record of the failed result has no key)
    assert [a.key for a in artifacts if a.key] == []
