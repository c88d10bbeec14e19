"""Remote failures, running out of memory, and two triggers of one iteration (docs/reliability.md,
"Remote failures and memory").

- an endpoint (the LLM judge's, the openai engine's) that is down, slower than its timeout,
  overloaded or answering garbage is retried a bounded number of times with exponential backoff,
  then that stage alone fails naming the endpoint, what happened, the attempts and the setting;
  the finished stages keep their artifacts and the rerun reuses them (a tiny pipeline whose
  reward is an `llm_judge` on a local HTTP server);
- an engine or the value trainer running out of memory stops its stage at once (no retry) naming
  the stage and the memory settings; earlier artifacts are kept;
- two flow runs of one iteration started together end with one artifact per stage (slow).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import iro.core.endpoint as endpoint_module
from iro.app import cli
from iro.core.config import parse_config
from iro.core.endpoint import Endpoint, EndpointError
from iro.core.engines.base import ContinuationRequest, SamplingSettings
from iro.core.engines.openai_engine import OpenAIEngine
from iro.core.errors import OutOfMemory, out_of_memory
from iro.core.store.local import ArtifactStore
from iro.reward.base import RewardError
from iro.reward.llm_judge import LLMJudgeReward
from tests.http_stub import StubServer, chat_completion, json_reply, stub_server

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-remote-faults-0123456789"
STAGES = ("rollout", "score", "reweight", "value")
MESSAGES = [{"role": "user", "content": "rate this"}]


# -- a judge endpoint that misbehaves on request --


@pytest.fixture
def judge() -> Iterator[StubServer]:
    """An OpenAI-compatible server; `mode`: ok (a chat completion rating the text), overloaded
    (503), slow (answers after 5 s), garbage (a 200 HTML page), refuse (400). `fail_first`: that
    many requests get `mode`, the rest an ok answer. Counts `hits`."""

    def respond(handler, request):
        server = handler.server
        mode = server.mode if handler.hit <= server.fail_first else "ok"
        if mode == "slow":
            server.stop.wait(5)
            mode = "ok"
        if mode == "garbage":
            return 200, "text/html", b"<html>maintenance</html>"
        if mode == "ok":
            text = request["messages"][0]["content"] if "messages" in request else ""
            return json_reply(chat_completion(str(1 + len(text) % 9), model="judge"))
        status = {"overloaded": 503, "refuse": 400}[mode]
        return json_reply({"error": {"message": mode}}, status)

    with stub_server(respond, mode="ok", fail_first=10**9) as server:
        yield server


def closed_port_url() -> str:
    """A URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def delays(monkeypatch) -> list[float]:
    """The backoff delays the endpoint asks for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(endpoint_module, "_sleep", asked.append)
    return asked


def assert_exponential(asked: list[float], base: float, retries: int) -> None:
    """Retry n waits base * 2**(n-1), less at most a quarter (jitter)."""
    assert len(asked) == retries
    for n, delay in enumerate(asked, start=1):
        full = base * 2 ** (n - 1)
        assert 0.75 * full <= delay <= full, asked


# what happened, as the final error says it
FAILURES = {
    "down": r"could not connect \(APIConnectionError: Connection error\. \(.*[Cc]onnection refused",
    "slow": r"no answer within timeout_s = 0\.3 s \(APITimeoutError",
    "overloaded": r"InternalServerError: Error code: 503",
    "garbage": r"HTTP 200 but answered without a completion \(str\)",
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_endpoint_is_retried_with_backoff_then_named(failure, judge, delays):
    judge.mode = failure
    url = closed_port_url() if failure == "down" else judge.url
    endpoint = Endpoint(
        base_url=url, model="judge", api_key=KEY, max_retries=3, timeout_s=0.3,
        retry_delay_s=0.01, settings="policy.endpoint.",
    )  # fmt: skip
    with pytest.raises(EndpointError) as err:
        endpoint.chat(messages=MESSAGES)
    message = str(err.value)
    assert message.startswith(f"endpoint {url} failed 4 times (model judge): ")
    assert re.search(FAILURES[failure], message), message
    assert (
        "3 retries with exponential backoff from 0.01 s (policy.endpoint.retry_delay_s)" in message
    )
    assert "raise policy.endpoint.max_retries (now 3)" in message
    assert ("policy.endpoint.timeout_s" in message) == (failure == "slow")
    assert err.value.retryable and KEY not in message
    assert_exponential(delays, 0.01, retries=3)
    assert judge.hits == (0 if failure == "down" else 4)


def test_an_endpoint_that_recovers_is_answered_after_its_retries(judge, delays):
    judge.mode, judge.fail_first = "overloaded", 2
    endpoint = Endpoint(
        base_url=judge.url, model="judge", api_key=KEY, max_retries=3, timeout_s=5,
        retry_delay_s=0.01,
    )  # fmt: skip
    answer = endpoint.chat(messages=MESSAGES)
    assert answer.choices[0].message.content.isdigit()
    assert judge.hits == 3
    assert_exponential(delays, 0.01, retries=2)


def test_a_refusal_is_not_retried_and_retry_after_is_honoured(judge, delays):
    judge.mode = "refuse"
    endpoint = Endpoint(
        base_url=judge.url, model="judge", api_key=KEY, max_retries=3, timeout_s=5,
        retry_delay_s=0.01,
    )  # fmt: skip
    with pytest.raises(
        EndpointError, match=r"failed \(model judge\): BadRequestError.*not retried"
    ):
        endpoint.chat(messages=MESSAGES)
    assert judge.hits == 1 and delays == []

    too_many = SimpleNamespace(response=SimpleNamespace(headers={"retry-after": "0.05"}))
    assert endpoint.delay(1, too_many) == 0.05
    assert endpoint.delay(1, None) <= 0.01


@pytest.mark.parametrize("failure", ["down", "slow", "garbage"])
def test_the_judge_stops_at_the_first_request_that_fails_for_good(
    failure, judge, delays, monkeypatch, caplog
):
    """The reward fails naming the row, the endpoint, what happened and the judge's options, and
    sends no request once the endpoint has failed (each would fail alike after its retries)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    judge.mode = failure
    url = closed_port_url() if failure == "down" else judge.url
    reward = LLMJudgeReward(
        model="judge", base_url=url, max_retries=1, concurrency=1, timeout_s=0.3,
        retry_delay_s=0.01,
    )  # fmt: skip
    with pytest.raises(RewardError) as err:
        reward.score(["p"] * 5, ["a", "b", "c", "d", "e"])
    message = str(err.value)
    assert message.startswith("reward 'llm_judge' returned nan for row 0: 5 of 5 judge request(s)")
    assert f"endpoint {url} failed 2 times (model judge)" in message
    assert re.search(FAILURES[failure], message), message
    assert "raise reward.components[llm_judge].options.max_retries (now 1)" in message
    assert judge.hits == (0 if failure == "down" else 2)  # one request, retried once
    assert reward.client.requests == 1 and reward.client.failures == 5
    assert KEY not in message and KEY not in caplog.text
    # `iro` exits 75 (try again later): the endpoint failed the way retries are for
    assert cli.exit_code(err.value) == cli.EXIT_TEMPFAIL


def test_the_openai_engine_stops_the_step_naming_the_policy_endpoint_settings(
    judge, delays, tiny_tokenizer
):
    judge.mode = "garbage"
    engine = OpenAIEngine(
        base_url=judge.url, model="m", tokenizer=tiny_tokenizer, api_key=KEY, max_retries=2,
        retry_delay_s=0.01, concurrency=1,
    )  # fmt: skip
    requests = [ContinuationRequest((3, 4), 2, 4, seed=s) for s in range(4)]
    with pytest.raises(EndpointError) as err:
        engine.continue_batch(requests, SamplingSettings())
    message = str(err.value)
    assert f"endpoint {judge.url} failed 3 times (model m): HTTP 200 but answered" in message
    assert "raise policy.endpoint.max_retries (now 2)" in message
    assert judge.hits == 3  # the first request and its retries; the other three never sent


# -- a tiny pipeline whose reward is the judge --


def tiny_config(tmp: Path, model: Path, reward: list[dict]) -> dict:
    """One iteration, 2 prompts, 2 samples each, the transformers engine on the tiny model."""
    return {
        "run_name": "faults",
        "seed": 3,
        "iterations": 1,
        "policy": {"model": str(model), "engine": "hf"},
        "data": {
            "dataset": str(REPO / "data" / "docstrings.jsonl"),
            "prompts_per_iteration": 2,
            "eval_prompts": 2,
            "use_chat_template": False,
            "prompt_template": "{prompt}",
        },
        "reward": {"components": reward},
        "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_k": 0},
        "rollout": {"samples": 2},
        "reweight": {"scheme": "weighted"},
        "value": {
            "backbone": str(model),
            "num_layers": 1,
            "max_length": 64,
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 2},
        },
        "eval": {"enabled": False},
        "store": {"root": str(tmp / "store")},
    }


def judge_reward(url: str) -> list[dict]:
    options = {"model": "judge", "base_url": url, "max_retries": 2, "timeout_s": 2,
               "retry_delay_s": 0.01, "concurrency": 2}  # fmt: skip
    return [{"type": "llm_judge", "options": options}]


def finished(store: Path) -> dict[str, list[str]]:
    """Each stage's published artifacts (every one verified against its manifest)."""
    checks = ArtifactStore(store).verify()
    assert [c.problem for c in checks if c.problem] == []
    stages: dict[str, list[str]] = {}
    for check in checks:
        stage, artifact_id = check.ref.split("/")
        stages.setdefault(stage, []).append(artifact_id)
    return stages


def leftovers(store: Path) -> list[Path]:
    """Staging directories (hidden, in the stage directories)."""
    return sorted(p for p in store.glob("*/.*") if p.is_dir())


def test_a_failing_judge_fails_scoring_alone_and_the_rerun_reuses_the_rollout(
    judge, tiny_lm, tmp_path, monkeypatch, caplog
):
    from iro.pipeline.runner import Pipeline

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.INFO)
    cfg = parse_config(tiny_config(tmp_path, tiny_lm, judge_reward(judge.url)))
    store = Path(cfg.store.root)
    judge.mode = "overloaded"
    with pytest.raises(RewardError) as err:
        Pipeline(cfg).iteration(1, [])
    assert f"endpoint {judge.url} failed 3 times (model judge)" in str(err.value)
    assert "503" in str(err.value) and "options.max_retries (now 2)" in str(err.value)
    done = finished(store)
    assert list(done) == ["rollout"] and len(done["rollout"]) == 1
    assert leftovers(store) == []
    rollout_id = done["rollout"][0]
    written = (store / "rollout" / rollout_id / "manifest.json").stat().st_mtime_ns

    judge.mode = "ok"
    caplog.clear()
    artifacts = Pipeline(cfg).iteration(1, [])
    assert f"reusing rollout artifact {rollout_id}" in caplog.text
    assert "building rollout" not in caplog.text
    assert (store / "rollout" / rollout_id / "manifest.json").stat().st_mtime_ns == written
    assert {stage: len(ids) for stage, ids in finished(store).items()} == dict.fromkeys(STAGES, 1)
    scores = artifacts["score"].table()["reward"]
    assert scores.between(1, 10).all()


# -- out of memory --


class OutOfMemoryEngine:
    name = "oom"
    eos_token_id = 1

    def __init__(self, error: BaseException):
        self.error, self.calls = error, 0

    def continue_batch(self, requests, sampling):
        self.calls += 1
        raise self.error


OOM_ERRORS = {
    "torch": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "runtime": RuntimeError("CUDA error: out of memory"),
    "vllm": ValueError("No available memory for the cache blocks. Try increasing ..."),
}


@pytest.mark.parametrize("kind", list(OOM_ERRORS))
def test_an_engine_out_of_memory_stops_generation_naming_the_knobs(
    kind, tiny_lm, tmp_path, monkeypatch
):
    from iro.pipeline import generation
    from iro.pipeline.runner import Pipeline

    config = tiny_config(tmp_path, tiny_lm, [{"type": "length_penalty"}])
    config["policy"]["prompts_per_call"] = 8
    cfg = parse_config(config)
    engine = OutOfMemoryEngine(OOM_ERRORS[kind])
    monkeypatch.setattr(generation, "get_engine", lambda *args: engine)
    with pytest.raises(OutOfMemory) as err:
        Pipeline(cfg).rollout(1, [])
    message = str(err.value)
    assert message.startswith("generation (the search of a rollout or an evaluation) ran out")
    for knob in ("policy.prompts_per_call (now 8)", "value.score_batch_size (now 16)",
                 "policy.gpu_memory_utilization (now 0.3)", "policy.cpu_kv_cache_gib (now 1)"):  # fmt: skip
        assert knob in message, message
    assert "not retried" in message and err.value.__cause__ is OOM_ERRORS[kind]
    assert engine.calls == 1  # not retried
    assert ArtifactStore(cfg.store.root).verify() == [] and leftovers(Path(cfg.store.root)) == []


def test_other_engine_errors_pass_unchanged(tiny_lm, tmp_path, monkeypatch):
    from iro.pipeline import generation
    from iro.pipeline.runner import Pipeline

    cfg = parse_config(tiny_config(tmp_path, tiny_lm, [{"type": "length_penalty"}]))
    monkeypatch.setattr(generation, "get_engine", lambda *a: OutOfMemoryEngine(KeyError("x")))
    with pytest.raises(KeyError):
        Pipeline(cfg).rollout(1, [])
    with pytest.raises(RuntimeError, match=r"^device-side assert$"), out_of_memory("s", {}):
        raise RuntimeError("device-side assert")


def test_value_training_out_of_memory_keeps_the_earlier_artifacts(tiny_lm, tmp_path, monkeypatch):
    from iro.pipeline import value_training
    from iro.pipeline.runner import Pipeline

    def out_of_memory_training(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr(value_training, "train_value_model", out_of_memory_training)
    reward = [{"type": "length_penalty", "options": {"target_words": 2}}]
    cfg = parse_config(tiny_config(tmp_path, tiny_lm, reward))
    with pytest.raises(OutOfMemory) as err:
        Pipeline(cfg).iteration(1, [])
    message = str(err.value)
    assert message.startswith("value training ran out of memory (OutOfMemoryError: CUDA out")
    assert "value.training.per_device_train_batch_size (now 2)" in message
    assert "value.training.gradient_accumulation_steps (now 1)" in message
    store = Path(cfg.store.root)
    assert {s: len(ids) for s, ids in finished(store).items()} == dict.fromkeys(STAGES[:3], 1)
    assert leftovers(store) == []


def test_the_cli_reports_out_of_memory_in_one_line(monkeypatch, capsys):
    def check(args):
        with out_of_memory("value training", {"value.max_length": (512, "shorter texts")}):
            raise torch.OutOfMemoryError("CUDA out of memory.\nmore lines")

    monkeypatch.setattr(cli, "_cmd_check", check)
    assert cli.main(["check", "run.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: value training ran out of memory (OutOfMemoryError: CUDA out ")
    assert "value.max_length (now 512): shorter texts" in err


# -- two triggers of one iteration --


def hold_in_rollout(hold: str) -> None:
    """Run `iro iteration` (argv), its first rollout call held until `hold/release` exists,
    after saying `hold/inside-<pid>`: the test then knows this process holds the run lock."""
    from iro.app.cli import main
    from iro.pipeline.runner import Pipeline

    rollout, hold = Pipeline.rollout, Path(hold)

    def held(self, *args, **kwargs):
        (hold / f"inside-{os.getpid()}").write_text("")
        deadline = time.monotonic() + 300
        while not (hold / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return rollout(self, *args, **kwargs)

    Pipeline.rollout = held
    sys.exit(main(sys.argv[1:]))


@pytest.mark.slow
def test_two_flow_runs_of_one_iteration_end_with_one_set_of_artifacts(tiny_lm, tmp_path):
    """Two processes each run `iro iteration 1` (a Prefect flow run on its own temporary API
    server: PREFECT_API_URL unset) of one config at once. The first to take the run lock is held
    in its rollout until the other is seen waiting on the lock; then both must succeed, the
    second reusing every stage, with exactly one artifact per stage in the store."""
    reward = [{"type": "length_penalty", "options": {"target_words": 2}}]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, tiny_lm, reward)))
    hold = tmp_path / "hold"
    hold.mkdir()
    code = f"from tests.test_remote_faults import hold_in_rollout as h; h({str(hold)!r})"
    procs, logs = [], []
    for n in range(2):
        env = {**os.environ, "PREFECT_HOME": str(tmp_path / f"prefect-{n}"),
               "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
        env.pop("PREFECT_API_URL", None)
        logs.append(tmp_path / f"flow-{n}.log")
        with logs[-1].open("w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, "iteration", str(config), "--iteration", "1"],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    started = time.monotonic()
    try:
        # wait until one holds the run lock and the other waits for it
        while time.monotonic() - started < 400:
            inside = [p.name.split("-")[1] for p in hold.glob("inside-*")]
            texts = [log.read_text() for log in logs]
            if inside and any(f"is busy in process {inside[0]}" in t for t in texts):
                break
            if any(p.poll() is not None for p in procs):
                pytest.fail("a flow run ended early:\n" + "\n".join(t[-3000:] for t in texts))
            time.sleep(0.5)
        else:
            pytest.fail("the runs never overlapped:\n" + "\n".join(t[-3000:] for t in texts))
        (hold / "release").write_text("")
        for proc in procs:
            proc.wait(timeout=max(1, 600 - (time.monotonic() - started)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    print(f"two concurrent flow runs: {time.monotonic() - started:.1f} s")
    texts = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(t[-3000:] for t in texts)
    first = [p.pid for p in procs].index(int(inside[0]))
    second = 1 - first
    assert [texts[first].count(f"building {s} artifact") for s in STAGES] == [1, 1, 1, 1]
    assert [texts[second].count(f"reusing {s} artifact") for s in STAGES] == [1, 1, 1, 1]
    assert "building" not in texts[second]
    store = tmp_path / "store"
    assert {s: len(ids) for s, ids in finished(store).items()} == dict.fromkeys(STAGES, 1)
    assert leftovers(store) == []
    record = json.loads((store / "runs" / "faults" / "iteration-1.json").read_text())
    assert set(record["artifacts"]) == set(STAGES)
