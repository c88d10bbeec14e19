"""Security guarantees, each with the test that fails if it is removed (docs/reliability.md).

- weights load from safetensors only: pickled checkpoints are refused, nothing unpickles;
- trust_remote_code is off unless the config turns it on;
- names from configs, flow parameters and CLI arguments cannot leave the store;
- API keys never reach logs, manifests, run records, exception text or the printed config;
- the servers the tools start listen on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import traceback
from contextlib import AbstractContextManager
from pathlib import Path

import datasets.config
import pytest
import torch
import yaml

from iro.app import server
from iro.app.cli import build_parser, main
from iro.core.compat import check_run_inputs
from iro.core.config import (
    RUN_NAME_PATTERN,
    ConfigError,
    RunConfig,
    check_run_name,
    load_config,
    parse_config,
)
from iro.core.endpoint import Endpoint, EndpointError
from iro.core.models import UnsafeModelError, resolve_model
from iro.core.store.local import Artifact, ArtifactError, ArtifactStore
from iro.pipeline.evaluation import eval_row, rows_as_dicts
from iro.pipeline.methods import guided_method, method_label
from iro.pipeline.runner import Pipeline
from iro.reports.run import build_report
from iro.reward.base import RewardError
from iro.reward.composite import WeightedSum
from iro.reward.llm_judge import LLMJudgeReward
from iro.reward.openai_client import ChatClient, resolve_api_key
from tests.http_stub import StubServer, chat_completion, json_reply, stub_server
from tests.test_remote_faults import judge_reward, tiny_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("iro", "reward", "valuefn", "tasks", "flows")
KEY = "sk-planted-7f3a9c0e5b1d4e2f8a6c"


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]


def dotted(node: ast.AST) -> str:
    """`torch.load` for the call target torch.load, '' for anything that is not a name chain."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


# -- weights: safetensors only --


def pickled_copy(tiny_lm: Path, target: Path) -> Path:
    """The tiny checkpoint with its weights as pytorch_model.bin instead of model.safetensors."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_lm, target)
    torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    return target


def test_a_checkpoint_with_only_pickled_weights_is_refused(tiny_lm, tmp_path, capsys):
    pickled = pickled_copy(tiny_lm, tmp_path / "pickled")
    with pytest.raises(UnsafeModelError) as err:
        resolve_model(str(pickled))
    assert f"model directory {pickled} holds only pickled weights (pytorch_model.bin)" in str(
        err.value
    )
    assert "never loaded" in str(err.value) and "safe_serialization=True" in str(err.value)
    # every model a run reads goes through it: policy, value backbone, implicit-reward pair
    for section in ("policy: {model: %s}", "value: {backbone: %s}"):
        config = tmp_path / "run.yaml"
        config.write_text(section % pickled + "\n")
        assert main(["check", str(config)]) == 2
        assert "holds only pickled weights" in capsys.readouterr().err
    # with safetensors beside it, or no weights at all (a tokenizer), it resolves
    shutil.copy(tiny_lm / "model.safetensors", pickled)
    assert resolve_model(str(pickled)) == str(pickled.resolve())
    tokenizer_only = tmp_path / "tokenizer-only"
    tokenizer_only.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_lm / name, tokenizer_only)
    assert resolve_model(str(tokenizer_only)) == str(tokenizer_only.resolve())


def test_no_code_unpickles_or_writes_pickled_weights():
    """torch.load/pickle/joblib are never called; checkpoints are written as safetensors."""
    found = []
    for path in project_files():
        for call in calls(path):
            name = dotted(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            unsafe = name in {"torch.load", "torch.save", "pickle.load", "pickle.loads"}
            unsafe |= name.startswith(("joblib.", "dill.", "cloudpickle."))
            serialization = keywords.get("safe_serialization")
            unsafe |= isinstance(serialization, ast.Constant) and serialization.value is False
            weights_only = keywords.get("weights_only")
            unsafe |= isinstance(weights_only, ast.Constant) and weights_only.value is False
            if unsafe:
                found.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
    assert not found, found


# -- trust_remote_code --


def test_trust_remote_code_is_off_unless_the_config_turns_it_on():
    assert RunConfig().policy.trust_remote_code is False
    assert parse_config({"policy": {"trust_remote_code": True}}).policy.trust_remote_code
    with pytest.raises(ConfigError, match="trust_remote_code: expected true or false"):
        parse_config({"policy": {"trust_remote_code": "yes"}})
    # the run record (runs/<run>/iteration-k.json holds config.model_dump()) carries it
    assert RunConfig().model_dump()["policy"]["trust_remote_code"] is False
    # no call passes a literal True: the permission always comes from a setting
    literal = []
    for path in project_files():
        for call in calls(path):
            for keyword in call.keywords:
                value = keyword.value
                is_literal = isinstance(value, ast.Constant)
                if keyword.arg == "trust_remote_code" and is_literal and value.value is not False:
                    literal.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not literal, literal
    # and a default of True nowhere in a signature
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arguments):
                names = [*node.posonlyargs, *node.args, *node.kwonlyargs]
                defaults = [None] * (len(node.posonlyargs) + len(node.args) - len(node.defaults))
                pairs = zip(names, [*defaults, *node.defaults, *node.kw_defaults], strict=True)
                for arg, default in pairs:
                    if arg.arg == "trust_remote_code" and isinstance(default, ast.Constant):
                        assert default.value is False, f"{path}:{arg.lineno}"


# -- paths stay in the store --

ESCAPES = ["../../etc", "/etc", "a/b", "..", ".hidden", "run\n", "Upper", ""]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_run_name_cannot_leave_the_store(name, tmp_path):
    with pytest.raises(ConfigError, match="not a valid run name"):
        parse_config({"run_name": name})
    with pytest.raises(ConfigError, match="is not valid: use lowercase letters"):
        check_run_name(name)
    store = ArtifactStore(tmp_path / "store")
    if name != "Upper":  # the store takes any plain directory name: this one only fails above
        with pytest.raises(ArtifactError, match="would leave the artifact store"):
            store.record_run_step(name, "iteration-1", {"x": 1})
        with pytest.raises(ArtifactError, match="would leave the artifact store"):
            store.run_dir(name)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_the_flow_parameter_and_the_config_share_the_run_name_rule():
    from iro.flows.params import ExistingRun, RunName

    assert ExistingRun in RunName.__args__  # the optional run_name of the flows, and decode's run
    metadata = ExistingRun.__metadata__[0].metadata
    pattern = next(m.pattern for m in metadata if hasattr(m, "pattern"))
    assert pattern == RUN_NAME_PATTERN


@pytest.mark.parametrize(
    ("stage", "artifact_id"), [("..", "x"), ("value", "../../etc"), ("/etc", "x"), ("a/b", "c")]
)
def test_a_stage_or_id_cannot_leave_the_store(stage, artifact_id, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError, match="would leave the artifact store"):
        store.path_of(stage, artifact_id)
    with pytest.raises(ArtifactError, match="would leave the artifact store"):
        store.find(stage, artifact_id)
    assert store.path_of("value", "0123abcd") == tmp_path / "store" / "value" / "0123abcd"


def test_cli_names_cannot_leave_the_store(tmp_path, capsys):
    root = tmp_path / "store"
    (root / "value" / "abc").mkdir(parents=True)
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "iteration-1.json").write_text("{}")  # what a traversal would find
    code = main(["decode", "--run", "../../etc", "--store", str(root), "--prompt", "x"])
    assert code == 2 and "run name '../../etc' is not valid" in capsys.readouterr().err
    code = main(["report", "--run", "../etc"])
    assert code == 2 and "run name '../etc' is not valid" in capsys.readouterr().err
    # quarantine reads STAGE/ID as the last two parts: `../../etc/passwd` is etc/passwd inside
    code = main(["store", "quarantine", "--root", str(root), "../../etc/passwd"])
    assert code == 2 and f"no artifact etc/passwd in {root}" in capsys.readouterr().err
    config = tmp_path / "run.yaml"
    config.write_text("run_name: ok\n")
    assert main(["check", str(config), "--set", "run_name=../x"]) == 2
    assert "not a valid run name" in capsys.readouterr().err
    assert outside.exists() and (root / "value" / "abc").is_dir()


# -- API keys --


@pytest.fixture
def stub():
    """An OpenAI-compatible stub whose every answer quotes the request's Authorization header."""

    def respond(handler, request):
        auth, kind = handler.headers["Authorization"], handler.server.answer
        if kind == "garbage":  # a proxy's HTML page
            return 200, "text/html", f"<html>{auth}</html>".encode()
        if kind == "no-choices":
            return json_reply({"auth": auth})
        return json_reply({"error": {"message": f"refused: {auth}"}}, kind)

    with stub_server(respond, answer=500) as server:
        yield server


def everything_said(err: BaseException) -> str:
    """What a traceback shows of an exception: its chain, causes and contexts included."""
    return "".join(traceback.format_exception(err))


@pytest.mark.parametrize("answer", [500, 400, "garbage", "no-choices"])
def test_a_failing_judge_stops_the_reward_without_the_key(stub, answer, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)  # every logger, the openai and httpx clients' included
    stub.answer = answer
    judge = LLMJudgeReward(model="m", base_url=stub.url, max_retries=1, concurrency=2)
    reward = WeightedSum([(judge, 1.0)])
    with pytest.raises(RewardError, match=r"reward 'llm_judge' returned nan for row 0") as err:
        reward.score(["p", "q"], ["a", "b"])
    assert stub.hits >= 2 and judge.client.failures == 2
    assert KEY not in everything_said(err.value)
    assert KEY not in caplog.text
    assert stub.url.removesuffix("/v1") in caplog.text  # the failures are logged, naming where
    assert KEY not in repr(judge.client) and KEY not in repr(judge.client._endpoint)


def test_a_rejected_key_raises_without_the_key_in_the_chain(stub, caplog):
    caplog.set_level(logging.DEBUG)
    stub.answer = 401
    client = ChatClient(model="m", api_key=KEY, base_url=stub.url, max_retries=2)
    with pytest.raises(EndpointError, match=rf"endpoint {stub.url} failed \(model m\)") as err:
        client.complete([{"role": "user", "content": "hi"}])
    assert err.value.status_code == 401 and stub.hits == 1
    assert KEY not in everything_said(err.value) and KEY not in caplog.text


def test_the_endpoint_error_message_masks_the_key(stub):
    stub.answer = 503
    endpoint = Endpoint(base_url=stub.url, model="m", api_key=KEY, max_retries=0, timeout_s=5)
    with pytest.raises(EndpointError) as err:
        endpoint.chat(messages=[{"role": "user", "content": "hi"}])
    assert KEY not in str(err.value) and "***" in str(err.value)


def test_no_key_reaches_the_config_manifests_run_records_or_check_output(
    tmp_path, tiny_lm, monkeypatch, capsys, caplog
):
    """A run reads keys from the environment only: the config holds the variable's name, and
    everything a run writes (stage manifests with their config slices, run records with the whole
    config) and `iro check` prints carry the name, never the value."""
    from iro.pipeline.identity import STAGE_READS, config_slice

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ENDPOINT_KEY", KEY)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"run_name: keys\n"
        f"policy:\n  model: {tiny_lm}\n  engine: openai\n"
        f"  endpoint: {{base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: ENDPOINT_KEY}}\n"
        f"value: {{backbone: {tiny_lm}}}\n"
        f"data: {{dataset: {ROOT / 'data' / 'docstrings.jsonl'}, prompts_per_iteration: 2,"
        f" eval_prompts: 2}}\n"
        f"store: {{root: {tmp_path / 'store'}}}\n"
        f"report: {{pairwise_judge: summary, judge: {{api_key_env: OPENAI_API_KEY}}}}\n"
    )
    assert main(["check", str(config)]) == 0
    printed = capsys.readouterr()
    assert "ENDPOINT_KEY" in printed.out and KEY not in printed.out + printed.err
    cfg = load_config(config)
    check_run_inputs(cfg, cfg.iterations, cfg.eval.enabled)
    store = ArtifactStore(cfg.store.root)

    def build(out: Path) -> dict:
        (out / "table.txt").write_text("x")
        return {"rows": 1}

    for stage in STAGE_READS:  # one artifact per kind of stage, with that stage's config slice
        store.create(stage.split("-")[0], 1, config_slice(cfg, stage), [], build, cfg.run_name)
    store.record_run_step(cfg.run_name, "iteration-1", {"config": cfg.model_dump()})
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    manifests = [json.loads(p.read_text()) for p in written if p.name == "manifest.json"]
    assert len(manifests) >= 5 and all(m["config"] for m in manifests)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    record = json.loads((store.run_dir("keys") / "iteration-1.json").read_text())
    assert record["config"]["policy"]["endpoint"]["api_key_env"] == "ENDPOINT_KEY"
    assert KEY not in caplog.text


def key_forms(key: str) -> dict[str, bytes]:
    """The ways a key is written into a file: as is, JSON-escaped, and base64 (standard and
    URL-safe) wherever it starts in the encoded text, as in `Authorization: Basic ...`."""
    raw = key.encode()
    forms = {"as is": raw, "JSON-escaped": json.dumps(key)[1:-1].encode()}
    for name, encode in (
        ("base64", base64.b64encode),
        ("url-safe base64", base64.urlsafe_b64encode),
    ):
        for offset in range(3):  # the key after `offset` bytes of a 3-byte group
            first = -(-8 * offset // 6)  # the first character holding no bit of those bytes
            end = 8 * (offset + len(raw)) // 6  # past the last one made of key bits only
            forms[f"{name} at offset {offset}"] = encode(bytes(offset) + raw)[first:end]
    return forms


def holding_the_key(key: str, texts: dict[str, bytes]) -> list[str]:
    """`<name> (<forms>)` for each text holding a form of `key`."""
    forms = key_forms(key)
    found = {name: [f for f, b in forms.items() if b in text] for name, text in texts.items()}
    return [f"{name} ({', '.join(held)})" for name, held in found.items() if held]


def every_file(root: Path) -> dict[str, bytes]:
    """Each file under `root` (hidden ones included) by its relative path: its bytes, and for a
    parquet table also its decoded rows, which its pages may hold compressed."""
    import pyarrow.parquet as pq

    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_bytes()
        if path.suffix == ".parquet":
            text += str(pq.read_table(path).to_pylist()).encode()
        files[path.relative_to(root).as_posix()] = text
    return files


def judge_requiring(key: str) -> AbstractContextManager[StubServer]:
    """An OpenAI-compatible judge answering only requests that send `key` (401 otherwise):
    ratings ("7") for the reward, verdicts ("Preferred: A") for the report's pairwise judge.
    `authorizations` lists each request's (kind, Authorization header)."""

    def respond(handler, request):
        pairwise = "Preferred:" in request["messages"][0]["content"]
        auth = handler.headers.get("Authorization", "")
        with handler.server.lock:
            handler.server.authorizations.append(("pairwise" if pairwise else "reward", auth))
        if auth != f"Bearer {key}":
            return json_reply({"error": {"message": "invalid api key"}}, 401)
        answer = "Comparison: A is shorter.\nPreferred: A" if pairwise else "7"
        return json_reply(chat_completion(answer, model="judge"))

    return stub_server(respond, authorizations=[])


def run_and_report(config: Path) -> Artifact:
    """What `iro run` then `iro report` do without Prefect (flows/pipeline.py, baselines.py,
    iteration.py, report.py): the same stages under the run lock, run records holding the whole
    config and the reweighting's and value training's metrics, and the report's key read from
    the variable its config names."""
    cfg = load_config(config)
    check_run_inputs(cfg, cfg.iterations, cfg.eval.enabled)
    pipeline = Pipeline(cfg)
    store = pipeline.store
    with store.run_lock(cfg.run_name):
        rows = [
            eval_row(method_label(m, cfg), pipeline.evaluate(m, [])) for m in cfg.eval.baselines
        ]
        values = []
        for k in range(1, cfg.iterations + 1):
            artifacts = pipeline.iteration(k, values)
            values.append(artifacts["value"])
            method = guided_method(cfg)
            rows.append(eval_row(method_label(method, cfg, k), pipeline.evaluate(method, values)))
            record = {
                "config": cfg.model_dump(),
                "artifacts": {stage: str(a.path) for stage, a in artifacts.items()},
                "reweight": artifacts["reweight"].metrics,
                "value_training": artifacts["value"].metrics,
            }
            store.record_run_step(cfg.run_name, f"iteration-{k}", record)
        evaluation = {"config": cfg.model_dump(), "evaluation": rows_as_dicts(rows)}
        store.record_run_step(cfg.run_name, "evaluation", evaluation)
    api_key = resolve_api_key(cfg.report.judge.api_key_env)
    return build_report(store, cfg.run_name, cfg.report, api_key)


def test_a_real_run_and_its_report_leave_no_key_in_any_file_or_log(
    tmp_path, tiny_lm, monkeypatch, caplog, capfd
):
    """A tiny run whose reward is an LLM judge, and its win-rate report with a pairwise judge,
    both behind a stub that answers only requests carrying the planted key, read from the
    environment variables the config names. Afterwards no form of the key (`key_forms`) is in
    any file under the test's directory, where the run writes everything: the store (its
    hidden staging and work directories and its run records included), the config, and the
    working, temporary and `datasets` cache directories it is given; nor in anything logged or
    printed, at any level."""
    caplog.set_level(logging.DEBUG)  # every logger, the openai and httpx clients' included
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # only the variables the config names
    monkeypatch.setenv("IRO_REWARD_JUDGE_KEY", KEY)
    monkeypatch.setenv("IRO_REPORT_JUDGE_KEY", KEY)
    for directory in ("tmp", "cwd"):
        (tmp_path / directory).mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.chdir(tmp_path / "cwd")
    with judge_requiring(KEY) as judge:
        reward = judge_reward(judge.url)
        reward[0]["options"]["api_key_env"] = "IRO_REWARD_JUDGE_KEY"
        settings = tiny_config(tmp_path, tiny_lm, reward) | {
            "run_name": "leak",
            "search": {"beams": 2, "children": 2, "chunk_tokens": 3},
            "eval": {"baselines": ["base"]},
            "report": {
                "baseline": "reference",
                "pairwise_judge": "summary",
                "judge": {"model": "judge", "base_url": judge.url, "max_retries": 0,
                          "api_key_env": "IRO_REPORT_JUDGE_KEY"},
            },
        }  # fmt: skip
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(settings))
        report = run_and_report(config)

    # the key was really used: every request of both judges sent it, and was answered
    kinds = [kind for kind, _ in judge.authorizations]
    assert {auth for _, auth in judge.authorizations} == {f"Bearer {KEY}"}
    assert kinds.count("reward") >= 4 and kinds.count("pairwise") == 8  # 2 methods x 2 prompts x 2
    assert report.metrics["judge_requests"] == 8 and report.metrics["judge_request_failures"] == 0
    files = every_file(tmp_path)
    assert {"store/runs/leak/iteration-1.json", "store/runs/leak/report.json"} <= set(files)
    assert len([n for n in files if n.endswith("manifest.json")]) == 7  # 4 stages, 2 evals, report
    printed = capfd.readouterr()
    said = {
        "log records": caplog.text.encode(),
        "stdout": printed.out.encode(),
        "stderr": printed.err.encode(),
    }
    assert b"building score artifact" in said["log records"]
    print(f"searched {len(files)} files ({sum(map(len, files.values()))} bytes) and {list(said)}")
    assert holding_the_key(KEY, files | said) == []


def test_a_key_written_where_its_variable_name_goes_is_refused_unechoed(tmp_path, capsys):
    for text in (
        f"report: {{judge: {{api_key_env: {KEY}}}}}",
        f"policy: {{engine: openai, endpoint: {{base_url: x, model: m, api_key_env: {KEY}}}}}",
    ):
        config = tmp_path / "run.yaml"
        config.write_text(text + "\n")
        with pytest.raises(ConfigError) as err:
            load_config(config)
        assert "api_key_env" in str(err.value) and "value not shown" in str(err.value)
        assert KEY not in everything_said(err.value)
        assert main(["check", str(config)]) == 2
        assert KEY not in capsys.readouterr().err


def test_no_flow_parameter_or_config_setting_holds_a_key():
    """Flow-run parameters are shown in the Prefect UI and stored by its server: none of them,
    and no config setting (flows take overrides of the config), is a place for a key's value."""
    from iro.flows.baselines import iro_baselines
    from iro.flows.iteration import iro_iteration
    from iro.flows.pipeline import iro_pipeline
    from iro.flows.report import winrate_report

    secretive = re.compile(r"key|secret|password|token$|credential", re.IGNORECASE)
    for flow in (iro_pipeline, iro_iteration, iro_baselines, winrate_report):
        names = inspect.signature(flow.fn).parameters
        assert not [n for n in names if secretive.search(n)], (flow.name, list(names))

    def settings(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    found += settings(candidate, f"{prefix}{name}.")
            found.append(f"{prefix}{name}")
        return found

    holding = [s for s in settings(RunConfig) if secretive.search(s.rsplit(".", 1)[-1])]
    assert holding, "the walk found no key settings at all"
    assert all(s.endswith(("_env", "_secret")) for s in holding), holding


# -- servers listen on 127.0.0.1 --


def test_the_prefect_server_binds_to_localhost_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_API_HOST", "0.0.0.0")  # a stray setting is overridden
    started = {}

    def fake_execve(executable, argv, env):  # replaces the process in real life
        started.update(argv=argv, env=env)

    monkeypatch.setattr(os, "execve", fake_execve)
    args = build_parser().parse_args(["server", "start"])
    assert args.host == "127.0.0.1"
    args.func(args)
    argv, env = started["argv"], started["env"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_UI_API_URL"].startswith("http://127.0.0.1:")
    # told otherwise, it does what it is told
    args = build_parser().parse_args(["server", "start", "--host", "0.0.0.0", "--port", "5000"])
    assert server.server_command(args.host, args.port)[-4:] == [
        "--host",
        "0.0.0.0",
        "--port",
        "5000",
    ]
    assert server.api_url() == "http://127.0.0.1:4200/api"  # what `iro serve` talks to by default


def test_no_project_code_binds_to_every_interface():
    """No server is started on 0.0.0.0 (or '' / ::) anywhere: the project starts the Prefect
    server above and no vLLM server (vLLM runs in-process; the tests' server binds 127.0.0.1)."""
    offenders = []
    for path in [*project_files(), ROOT / "tests" / "vllm_server.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
    text = (ROOT / "tests" / "vllm_server.py").read_text()
    assert '"--host", "127.0.0.1"' in text
