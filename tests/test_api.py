"""`iro api`: a tiny run's aligned policy behind the OpenAI API, served once for the module.

The official client against a real server gets exactly `decode`'s answers; the project's own
`openai` engine uses a served policy as the base of another search; bad requests are refused
with OpenAI's error shape before anything is decoded; the key is required and never shown;
concurrent requests share decode calls without changing any answer a seed pins.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pandas as pd
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from iro.app import api_worker
from iro.app.api import create_app, listen
from iro.app.api_schema import CompletionRequest
from iro.app.api_served import ServedModel, load_models, plan
from iro.app.api_worker import DecodeWorker
from iro.app.cli import build_parser, main
from iro.core.config import RunConfig, parse_config
from iro.core.store.remote import open_store
from iro.pipeline.decoder import decode
from iro.pipeline.execution import generate
from iro.pipeline.methods import search_settings
from iro.valuefn.model import TokenValueModel
from tests.conftest import make_causal_lm, make_tokenizer
from tests.test_decoder import RAW_PROMPTS, tiny_decode_config

KEY = "iro-test-key-7f3a91c2"
KEY_VAR = "IRO_TEST_API_KEY"
PROMPT = "the list of data"
PROMPTS = ["the list of data", "a file", "the new value of the path", "one short sentence"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}summary {% endif %}"
)


@dataclass
class Served:
    """The served app, what it serves, and every decode call its worker made."""

    root: Path
    lm: Path
    cfg: RunConfig  # the run's recorded config
    value_dirs: list[Path]  # the guide the model tiny@1 decodes with by default
    tokenizer: Any
    models: dict[str, ServedModel]
    worker: DecodeWorker
    app: FastAPI
    client: TestClient  # carries the key
    url: str  # the real server's /v1
    calls: list[dict[str, Any]] = field(default_factory=list, repr=False)
    submitted: list[object] = field(default_factory=list, repr=False)
    gate: threading.Event = field(default_factory=threading.Event)  # decode calls wait on it
    fail: bool = False  # decode calls raise


def tiny_run(root: Path, lm: Path, tokenizer) -> RunConfig:
    """Records of two finished runs, `tiny` and `other`, each with one value model."""
    cfg = parse_config(tiny_decode_config(lm, RAW_PROMPTS))
    for seed, run in enumerate(("tiny", "other")):
        torch.manual_seed(seed)
        value_dir = root / f"{run}-value"
        TokenValueModel.from_causal_lm(str(lm)).save(value_dir, tokenizer)
        record = {
            "run_name": run,
            "iteration": 1,
            "config": cfg.model_dump(),
            "policy": {"value_models": [str(value_dir)], "betas": [1.0]},
        }
        (root / "runs" / run).mkdir(parents=True)
        (root / "runs" / run / "iteration-1.json").write_text(json.dumps(record))
    return cfg


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("api")
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    lm = make_causal_lm(root / "lm", tokenizer=tokenizer)
    cfg = tiny_run(root, lm, tokenizer)
    models = load_models(open_store(str(root)), ["tiny@1"], ["other"], {})
    worker = DecodeWorker()
    app = create_app(models, worker, api_key=KEY)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    state = Served(
        root=root,
        lm=lm,
        cfg=cfg,
        value_dirs=[root / "tiny-value", root / "other-value"],
        tokenizer=tokenizer,
        models=models,
        worker=worker,
        app=app,
        client=TestClient(app, headers={"Authorization": f"Bearer {KEY}"}),
        url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1",
    )
    state.gate.set()

    def recorded(cfg, prompts, method, value_dirs, seed, **kwargs):
        call = {"prompts": prompts["prompt"].tolist(), "method": method, "seed": seed}
        state.calls.append(call)
        state.gate.wait(timeout=60)
        if state.fail:
            raise RuntimeError("the engine fell over")
        outputs = decode(cfg, prompts, method, value_dirs, seed, **kwargs)
        call["responses"] = outputs["response"].tolist()
        return outputs

    def counted(job):
        state.submitted.append(job)
        return submit(job)

    submit = worker.submit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api_worker, "decode", recorded)
        patch.setattr(worker, "submit", counted)
        patch.setenv(KEY_VAR, KEY)
        thread.start()
        wait_until(lambda: server.started)
        yield state
        server.should_exit = True
        thread.join()
        worker.close()


def reference(served: Served, prompt: str, method: str, seed: int, **search: int) -> pd.Series:
    """What `decode` answers for `prompt` alone with this method and seed."""
    cfg = served.cfg.model_copy(update={"search": served.cfg.search.model_copy(update=search)})
    frame = pd.DataFrame({"id": ["p"], "prompt": [prompt], "reference": None})
    return decode(cfg, frame, method, served.value_dirs, seed, betas=[1.0, 1.0]).iloc[0]


def post(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    """A completion from the real server."""
    headers = {"Authorization": f"Bearer {KEY}"}
    reply = httpx.post(f"{served.url}/completions", json=body, headers=headers, timeout=60)
    return reply.raise_for_status().json()


@contextmanager
def worker_held(served: Served) -> Iterator[None]:
    """The worker inside a decode call (of the base model) that lasts until the block ends."""
    calls = len(served.calls)
    served.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, served, {"model": "tiny@0", "prompt": PROMPT})
        try:
            wait_until(lambda: len(served.calls) == calls + 1)
            yield
        finally:
            served.gate.set()
        held.result()


def test_the_models_are_the_run_and_its_base(served):
    ids = [m["id"] for m in served.client.get("/v1/models").json()["data"]]
    assert ids == ["tiny@1", "tiny@0"]
    client = openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ids


def test_the_openai_client_gets_what_decode_answers(served):
    client = openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0)
    alignment = {"alignment": {"method": "iro"}}
    out = client.completions.create(model="tiny@1", prompt=PROMPT, seed=5, extra_body=alignment)
    expected = reference(served, PROMPT, "iro", seed=5)
    (choice,) = out.choices
    assert choice.text == expected["response"]
    assert choice.finish_reason == ("stop" if expected["ended"] else "length")
    assert out.usage.completion_tokens == expected["num_tokens"]
    assert out.usage.iro["method"] == "iro" and out.usage.iro["candidates"] == 4
    assert out.usage.iro["seconds"] > 0
    again = client.completions.create(model="tiny@1", prompt=PROMPT, seed=5, extra_body=alignment)
    assert again.choices[0].text == choice.text  # a seed gives the same answer every time

    messages = [{"role": "user", "content": "the document"}]
    bon = {"alignment": {"method": "bon", "beams": 1, "children": 3}}
    chat = client.chat.completions.create(model="tiny@1", messages=messages, seed=7, extra_body=bon)
    rendered = served.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    expected = reference(served, rendered, "bon", seed=7, beams=1, children=3)
    assert chat.choices[0].message.content == expected["response"]
    assert chat.usage.prompt_tokens == len(served.tokenizer(rendered).input_ids)
    assert chat.usage.iro["candidates"] == 3 and chat.usage.iro["method"] == "bon"


def test_n_answers_are_the_rows_of_one_call_with_the_seed(served):
    body = {"model": "tiny@1", "prompt": PROMPT, "n": 3, "seed": 11, "max_tokens": 4}
    first, second = (served.client.post("/v1/completions", json=body).json() for _ in range(2))
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert first["choices"] == second["choices"]
    assert served.calls[-1]["prompts"] == [PROMPT] * 3 and served.calls[-1]["seed"] == 11
    assert [c["text"] for c in first["choices"]] == served.calls[-1]["responses"]
    assert first["usage"]["prompt_tokens"] == 4 and first["usage"]["iro"]["candidates"] == 12


def test_an_aligned_policy_is_the_base_of_another_runs_search(served):
    """The project's `openai` engine sends token-id prompts; the served policy answers them."""
    endpoint = {"base_url": served.url, "model": "tiny@1", "api_key_env": KEY_VAR}
    cfg = parse_config(
        {
            "policy": {"model": str(served.lm), "engine": "openai", "endpoint": endpoint},
            "data": RAW_PROMPTS,
            "sampling": {"max_new_tokens": 4, "top_k": 0},
            "search": {"beams": 1, "children": 2},
        }
    )
    prompts = pd.DataFrame({"id": ["a", "b"], "prompt": PROMPTS[:2], "reference": None})
    before = len(served.calls)
    table = generate(cfg, prompts, search_settings(cfg, "bon"), [], seed=0, guided=False)
    calls = {tuple(c["prompts"]): c for c in served.calls[before:]}
    assert {c["method"] for c in calls.values()} == {"iro"}
    for prompt in PROMPTS[:2]:
        drawn = table.loc[table["prompt"] == prompt, "response"].tolist()
        answered = calls[(prompt, prompt)]["responses"]  # the first step: n = 2 in one request
        # the search keeps the best and continues it while shorter than asked (a special token
        # the served policy sampled is no text, so the other side counts fewer tokens)
        assert all(any(d.startswith(a) for a in answered) for d in drawn), (drawn, answered)
    assert (table["num_tokens"] <= 4).all()


BAD_REQUESTS = {
    "unknown model": ({"model": "nope"}, 404, "model", "not served here; served: tiny@1, tiny@0"),
    "unknown method": (
        {"alignment": {"method": "sparkle"}}, 400, "alignment.method", "unknown method 'sparkle'"
    ),
    "a method the base cannot serve": (
        {"model": "tiny@0", "alignment": {"method": "vas"}}, 400, "alignment.method",
        "cannot serve method 'vas'",
    ),
    "ivl, which no record names": (
        {"alignment": {"method": "ivl"}}, 400, "alignment.method", "names an IVL residual"
    ),
    "negative strength": (
        {"alignment": {"strengths": {"tiny": -1}}}, 400, "alignment.strengths", "must be >= 0"
    ),
    "a strength for a run not composed": (
        {"alignment": {"strengths": {"elsewhere": 1}}}, 400, "alignment.strengths",
        "guide nothing here",
    ),
    "every strength zero": (
        {"alignment": {"strengths": {"tiny": 0, "other": 0}}}, 400, "alignment.strengths",
        "needs at least one value model",
    ),
    "no beams": ({"alignment": {"beams": 0}}, 400, "alignment.beams", "search.beams"),
    "a misspelt alignment key": (
        {"alignment": {"bems": 2}}, 400, "alignment.bems", "Extra inputs"
    ),
    "top_p zero": ({"top_p": 0}, 400, "top_p", "sampling.top_p"),
    "a prompt longer than the context": (
        {"prompt": "the " * 1100}, 400, "prompt",
        "policy.max_model_len - sampling.max_new_tokens allows 1018",
    ),
    "n zero": ({"n": 0}, 400, "n", "n: Input should be greater than or equal to 1"),
    "streaming": ({"stream": True}, 400, "stream", "not supported"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_refused_before_decoding(served, case):
    body, status, param, words = BAD_REQUESTS[case]
    before = len(served.calls)
    response = served.client.post(
        "/v1/completions", json={"model": "tiny@1", "prompt": PROMPT, **body}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"], error
    assert len(served.calls) == before


def test_an_engine_failure_is_a_server_error(served):
    served.fail = True
    try:
        response = served.client.post("/v1/completions", json={"model": "tiny@1", "prompt": PROMPT})
    finally:
        served.fail = False
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["message"] == "decoding failed (RuntimeError: the engine fell over)"


def test_the_key_is_required_and_never_shown(served, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="iro")
    caplog.set_level(logging.DEBUG, logger="uvicorn")
    bare = TestClient(served.app)
    assert bare.get("/v1/models").status_code == 401
    wrong = bare.post(
        "/v1/completions",
        json={"model": "tiny@1", "prompt": PROMPT},
        headers={"Authorization": "Bearer not-the-key-0451"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "not-the-key-0451" not in wrong.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url, api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0)
    assert client.completions.create(model="tiny@1", prompt=PROMPT, seed=1).choices[0].text
    out, err = capfd.readouterr()
    assert caplog.records and KEY not in caplog.text + out + err


CONCURRENT = {  # temperature, seeded, one shared call
    "greedy: shared, as alone": (0.0, True, True),
    "sampled with seeds: each alone": (1.0, True, False),
    "sampled without seeds: shared": (1.0, False, True),
}


@pytest.mark.parametrize("case", list(CONCURRENT))
def test_concurrent_requests_share_calls_that_change_no_seeded_answer(served, case):
    temperature, seeded, shared = CONCURRENT[case]

    def ask(i: int) -> str:
        body = {"model": "tiny@1", "prompt": PROMPTS[i], "temperature": temperature}
        body |= {"alignment": {"method": "vas"}} | ({"seed": 20 + 7 * i} if seeded else {})
        return post(served, body)["choices"][0]["text"]

    calls, submitted = len(served.calls), len(served.submitted)
    with ThreadPoolExecutor(4) as pool:
        with worker_held(served):
            asked = [pool.submit(ask, i) for i in range(4)]
            wait_until(lambda: len(served.submitted) == submitted + 5)  # all four queued
        answers = [a.result() for a in asked]
    made = len(served.calls) - calls - 1
    if seeded:  # each asked again alone: the queue is empty, so each has a call of its own
        assert answers == [ask(i) for i in range(4)]
    assert made == (1 if shared else 4), f"{made} decode calls answered the 4 requests"


def test_a_request_given_up_while_queued_is_not_decoded(served):
    request = CompletionRequest(model="tiny@1", prompt="a file", seed=3)
    job = plan(served.models["tiny@1"], ["a file"], request, "prompt").job
    calls = len(served.calls)
    with worker_held(served):
        served.worker.submit(job)
        assert job.future.cancel()
    assert post(served, {"model": "tiny@1", "prompt": PROMPT})["choices"]
    assert [c["prompts"] for c in served.calls[calls + 1 :]] == [[PROMPT]]


def test_the_command_loads_then_listens_on_loopback(served, monkeypatch, caplog, capsys):
    caplog.set_level(logging.INFO, logger="iro")
    args = build_parser().parse_args(["api", "--run", "tiny"])
    assert (args.host, args.port, args.api_key_env) == ("127.0.0.1", 8000, None)
    listened = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: listened.extend(sockets))
    argv = ["api", "--run", "tiny", "--with", "other", "--store", str(served.root), "--port", "0"]
    assert main([*argv, "--api-key-env", KEY_VAR]) == 0
    (sock,) = listened
    host, port = sock.getsockname()
    sock.close()
    assert host == "127.0.0.1"
    assert f"iro api serving tiny@1, tiny@0 at http://127.0.0.1:{port}/v1" in caplog.text
    assert main([*argv, "--api-key-env", "IRO_TEST_UNSET_KEY"]) == 2
    assert "--api-key-env names IRO_TEST_UNSET_KEY, which is not set" in capsys.readouterr().err
    assert KEY not in caplog.text
