"""Bad input stops with a message that names the problem and the fix, before expensive work.

One test per row of the "Bad input" table in docs/reliability.md, in its order. Each asserts the
message the user sees; the ones that go through the `iro` command also assert that it exits 2 with
one line on stderr, not a traceback.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iro.app.cli import main
from iro.core.compat import IncompatibleValueModelError, check_run_inputs, check_value_models
from iro.core.config import ConfigError, load_config, parse_config, parse_override
from iro.core.data import DatasetError, check_prompt_counts, load_prompts
from iro.core.endpoint import EndpointError
from iro.core.models import ModelNotFoundError, check_model_reference, resolve_model
from iro.reward.base import Reward, RewardError
from iro.reward.composite import WeightedSum

ROOT = Path(__file__).resolve().parents[1]
DOCSTRINGS = ROOT / "data" / "docstrings.jsonl"  # 284 train, 59 test prompts


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def good_config(tmp_path: Path, model: Path, extra: str = "") -> Path:
    """A config whose every input exists: the tiny model, the test docstrings, small slices."""
    return write(
        tmp_path,
        f"run_name: bad-input\n"
        f"policy: {{model: {model}}}\n"
        f"value: {{backbone: {model}}}\n"
        f"data: {{dataset: {DOCSTRINGS}, prompts_per_iteration: 4, eval_prompts: 4}}\n"
        f"store: {{root: {tmp_path / 'store'}}}\n" + extra,
    )


def iro(capsys, *argv: str) -> tuple[int, str]:
    """Run the `iro` command in-process: its exit code and what it wrote on stderr."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# -- the config file --


def test_malformed_yaml_names_the_file_and_the_line(tmp_path, capsys):
    path = write(tmp_path, "search:\n  beams: 2\n children: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"config {path} is not valid YAML: line 3, column 2" in message
    assert "fix the syntax there" in message and "indentation" in message
    assert_one_line_error(*iro(capsys, "check", str(path)), str(path), "line 3")
    # an override from the command line is read as YAML too
    with pytest.raises(ConfigError, match=r"override 'search\.beams=\[2,': the value is not valid"):
        parse_override("search.beams=[2,")


def test_a_key_written_twice_is_an_error_not_a_silent_overwrite(tmp_path):
    path = write(tmp_path, "search:\n  beams: 2\nseed: 1\nsearch:\n  children: 3\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'search' appears a second time .*line 1"):
        load_config(path)


def test_unknown_key_is_named(tmp_path, capsys):
    path = write(tmp_path, "search:\n  beam: 4\n")
    with pytest.raises(ConfigError, match=r"search\.beam: unknown key; did you mean beams\?"):
        load_config(path)
    assert_one_line_error(
        *iro(capsys, "check", str(path)), "search.beam: unknown key", "(known here: beams, "
    )
    with pytest.raises(ConfigError, match=r"reward\.components\.0\.wieght: .* mean weight\?"):
        parse_config({"reward": {"components": [{"type": "sentiment", "wieght": 1}]}})


def _caused_by(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("search.beams must be >= 1"), 2),
        (EndpointError("endpoint down: could not connect", retryable=True), 75),
        (EndpointError("endpoint refused the request: HTTP 401", status_code=401), 2),
        (_caused_by(RewardError("judge got no answer"), EndpointError("down", retryable=True)), 75),
        (_caused_by(RewardError("judge refused"), EndpointError("401", status_code=401)), 2),
    ],
)
def test_the_exit_code_tells_a_fix_from_a_retry(monkeypatch, capsys, error, code):
    """2: fix the command or its inputs; 75 (EX_TEMPFAIL): an endpoint was down, slow or
    overloaded, and the same command may work later."""
    from iro.app import cli

    def fails(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_check", fails)
    assert cli.main(["check", "run.yaml"]) == code
    assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        (
            "value.training.lerning_rate",
            "value.training: ['lerning_rate'] are not TrainingArguments",
        ),
        ("value.training.output_dir", "value.training: ['output_dir'] are set by the pipeline"),
        ("ivl.training.lerning_rate", "ivl.training: ['lerning_rate'] are not SFTConfig fields"),
    ],
)
def test_a_trainer_setting_is_checked_before_the_run_starts(tmp_path, capsys, key, fragment):
    """value.training passes through to TrainingArguments: `iro check` and `iro run` refuse an
    unknown or reserved key at once, not at the value stage after rollout and scoring."""
    path = write(tmp_path, "iterations: 1\n")
    for command in ("check", "run", "iteration"):
        extra = ["--iteration", "1"] if command == "iteration" else []
        assert_one_line_error(
            *iro(capsys, command, str(path), "--set", f"{key}=1", *extra), fragment
        )
    assert not (tmp_path / ".iro").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sampling: {temperature: hot}", "sampling.temperature: Input should be a valid number"),
        ("iterations: true", "iterations: expected a number, got the flag true"),
        ("policy: {trust_remote_code: 'yes'}", "policy.trust_remote_code: expected true or false"),
        ("search: 3", "search: Input should be a valid dictionary"),
        ("iterations: 2.5", "iterations: Input should be a valid integer"),
        ("reweight: {beta: .nan}", "reweight.beta: Input should be a finite number"),
        ("- a list", "must be a mapping at the top level"),
    ],
)
def test_wrong_types_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text + "\n"))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("beta", "message"),
    [
        ("0", "value: value.beta must be > 0 (or a non-empty list of them), got 0.0"),
        ("-1.0", "value: value.beta must be > 0 (or a non-empty list of them), got -1.0"),
        ("[1.0, 0]", "value.beta.list[constrained-float].1: Input should be greater than 0"),
        (".nan", "value.beta.float: Input should be a finite number"),
    ],
)
def test_value_beta_must_be_positive(tmp_path, beta, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"iterations: 2\nvalue: {{beta: {beta}}}\n"))
    assert message in str(err.value)


@pytest.mark.parametrize("key", ["beams", "children"])
def test_a_search_budget_of_zero_is_refused(tmp_path, key):
    # U = w*k = 0 would sample nothing per prompt
    with pytest.raises(
        ConfigError, match=rf"search\.{key}: Input should be greater than or equal to 1"
    ):
        load_config(write(tmp_path, f"search: {{{key}: 0}}\n"))


# -- the dataset --


def test_an_empty_dataset_file_is_named(tmp_path):
    empty = write(tmp_path, "", "prompts.jsonl")
    cfg = parse_config({"data": {"dataset": str(empty)}}).data
    with pytest.raises(DatasetError, match=rf"dataset file {empty} is empty; point data.dataset"):
        load_prompts(cfg, "train")
    blank = write(tmp_path, "\n\n", "blank.jsonl")
    with pytest.raises(DatasetError, match=rf"cannot read dataset file {blank} as json"):
        load_prompts(parse_config({"data": {"dataset": str(blank)}}).data, "train")


def test_an_empty_split_names_the_splits_there_are(tmp_path):
    cfg = parse_config({"data": {"dataset": str(DOCSTRINGS), "eval_split": "validation"}}).data
    with pytest.raises(DatasetError) as err:
        load_prompts(cfg, cfg.eval_split)
    assert "split 'validation' has no rows" in str(err.value)
    assert "holds ['test', 'train']; set data.train_split/data.eval_split" in str(err.value)


def test_too_few_prompts_for_the_iterations_stop_before_the_first_one(tmp_path, tiny_lm, capsys):
    cfg = parse_config(
        {"iterations": 3, "data": {"dataset": str(DOCSTRINGS), "prompts_per_iteration": 100}}
    )
    with pytest.raises(DatasetError) as err:
        check_prompt_counts(cfg.data, cfg.iterations, evaluate=False)
    assert "3 iteration(s) of data.prompts_per_iteration = 100 need 300 training prompts" in str(
        err.value
    )
    assert "has 284; lower data.prompts_per_iteration to at most 94" in str(err.value)
    # `iro check` and `iro run` say so before anything runs (no store is created)
    path = good_config(tmp_path, tiny_lm, "iterations: 3\n")
    overrides = ["--set", "data.prompts_per_iteration=100"]
    assert_one_line_error(*iro(capsys, "check", str(path), *overrides), "need 300 training")
    assert_one_line_error(*iro(capsys, "run", str(path), *overrides), "need 300 training")
    assert not (tmp_path / "store").exists()


def test_eval_prompts_beyond_the_split_or_zero(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.eval_prompts: Input should be greater than or"):
        parse_config({"data": {"eval_prompts": 0}})
    cfg = parse_config({"data": {"dataset": str(DOCSTRINGS), "eval_prompts": 60}}).data
    with pytest.raises(DatasetError, match=r"data.eval_prompts = 60 but split 'test' .* has 59"):
        check_prompt_counts(cfg, 1, evaluate=True)
    assert check_prompt_counts(cfg, 1, evaluate=False) == {"train": 284}


def test_a_prompt_longer_than_the_context_is_refused_before_the_engine_starts(tiny_lm, monkeypatch):
    # the check lives in iro/pipeline/generation.py; on the transformers engine and a tiny model
    from iro.pipeline import generation
    from iro.pipeline.execution import generate
    from iro.pipeline.methods import rollout_settings

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine started before the prompts were checked")

    monkeypatch.setattr(generation, "get_engine", no_engine)

    cfg = parse_config(
        {
            "policy": {"model": str(tiny_lm), "engine": "hf", "max_model_len": 64},
            "sampling": {"max_new_tokens": 16},
            "data": {"use_chat_template": False, "prompt_template": "{prompt}"},
        }
    )
    prompts = pd.DataFrame(
        {"id": ["short", "long"], "prompt": ["the value", "the " * 60], "reference": None}
    )
    with pytest.raises(ValueError) as err:
        generate(cfg, prompts, rollout_settings(cfg, 1), [], seed=0, guided=False)
    assert str(err.value) == (
        "prompt 'long' has 60 tokens; policy.max_model_len - sampling.max_new_tokens allows 48; "
        "shorten the prompt or raise policy.max_model_len"
    )


# -- rewards --


class FixedReward(Reward):
    name = "fixed"

    def __init__(self, scores):
        self.scores = scores

    def score(self, prompts, responses):
        return self.scores


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (
            [0.5, float("nan"), 0.1],
            "reward 'fixed' returned nan for row 1 (1 non-finite score(s) in all); nothing was "
            "trained on it. Fix the reward",
        ),
        ([0.5, float("inf"), float("nan")], "returned inf for row 1 (2 non-finite"),
        (
            [0.5, 0.1],
            "reward 'fixed' returned shape (2,), expected (3,): a reward returns exactly one "
            "score per response",
        ),
        ([[0.5, 0.1, 0.2]], "returned shape (1, 3), expected (3,)"),
        (["good", "bad", "ugly"], "returned list that is not an array of numbers"),
    ],
)
def test_a_bad_reward_stops_naming_the_row_or_the_count(scores, message):
    reward = WeightedSum([(FixedReward(scores), 1.0)])
    with pytest.raises(RewardError) as err:
        reward.score(["p"] * 3, ["a", "b", "c"])
    assert message in str(err.value)


# -- value models from another run --


def _copy_value_model(value_dir: Path, target: Path, backbone: str | None) -> Path:
    """A copy of a saved value model as a value artifact, with a manifest naming `backbone`."""
    shutil.copytree(value_dir, target / "value_model")
    manifest = {"stage": "value", "id": target.name, "config": {"value.backbone": backbone}}
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target / "value_model"


@pytest.fixture(scope="module")
def saved_value_model(tiny_lm, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from iro.valuefn.model import TokenValueModel

    directory = tmp_path_factory.mktemp("value") / "value_model"
    TokenValueModel.from_causal_lm(str(tiny_lm), 1).save(
        directory, AutoTokenizer.from_pretrained(tiny_lm)
    )
    return directory


def test_a_value_model_trained_on_another_backbone_is_refused(saved_value_model, tiny_lm, tmp_path):
    other = _copy_value_model(saved_value_model, tmp_path / "abc123", "org/another-model")
    with pytest.raises(IncompatibleValueModelError) as err:
        check_value_models([other], backbone=str(tiny_lm))
    assert f"value model {other} was trained on value.backbone 'org/another-model'" in str(
        err.value
    )
    assert f"this config's value.backbone is {str(tiny_lm)!r}" in str(err.value)
    assert "set value.backbone: org/another-model" in str(err.value)
    # the same model recorded with this backbone passes, and so does one without a manifest
    same = _copy_value_model(saved_value_model, tmp_path / "def456", str(tiny_lm))
    assert [i.backbone for i in check_value_models([same, saved_value_model], str(tiny_lm))] == [
        str(tiny_lm),
        None,
    ]


def test_a_value_model_with_another_tokenizer_or_width_is_refused(
    saved_value_model, tiny_lm, tmp_path
):
    check_value_models([saved_value_model], backbone_dir=tiny_lm)  # its own backbone: fine
    other_tokenizer = Path(shutil.copytree(tiny_lm, tmp_path / "other-tokenizer"))
    data = json.loads((other_tokenizer / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["the"], vocab["a"] = vocab["a"], vocab["the"]  # same size, other ids
    (other_tokenizer / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(IncompatibleValueModelError, match="reads text with another tokenizer"):
        check_value_models([saved_value_model], backbone_dir=other_tokenizer)
    wider = Path(shutil.copytree(tiny_lm, tmp_path / "wider"))
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(IncompatibleValueModelError, match="has hidden_size 32 but the backbone"):
        check_value_models([saved_value_model], backbone_dir=wider)
    with pytest.raises(IncompatibleValueModelError, match="is not a saved value model"):
        check_value_models([tiny_lm])


# -- the environment --


def _fake_hub_cache(cache: Path, repo: str) -> None:
    """The layout huggingface_hub leaves after downloading `repo` (config.json only)."""
    folder, revision = cache / f"models--{repo.replace('/', '--')}", "0" * 40
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "snapshots" / revision / "config.json").write_text("{}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)


def test_a_hub_id_with_the_hub_offline_is_named_before_the_run(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("org/not-downloaded")
    message = str(err.value)
    assert "model 'org/not-downloaded' is a hub id but the hub is offline" in message
    assert f"not in the local cache {tmp_path / 'hub'}" in message
    assert "`hf download org/not-downloaded`" in message and "local checkpoint" in message
    path = write(tmp_path, "policy: {model: org/not-downloaded}\n")
    assert_one_line_error(*iro(capsys, "check", str(path)), "hub is offline")
    # once in the cache it resolves (to the id: transformers finds it there)
    _fake_hub_cache(tmp_path / "hub", "org/downloaded")
    assert resolve_model("org/downloaded") == "org/downloaded"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    check_model_reference("org/not-downloaded")  # online: loading will ask the hub


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_prefect_api_is_named_before_the_run(tmp_path, tiny_lm, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    path = good_config(tmp_path, tiny_lm)
    for command in (["run", str(path)], ["iteration", str(path), "--iteration", "1"]):
        assert_one_line_error(
            *iro(capsys, *command),
            f"no Prefect server answers at {url}",
            "start one with `iro server start` or unset PREFECT_API_URL",
        )
    assert_one_line_error(
        *iro(capsys, "serve", "--config", str(path), "--api-url", url),
        f"no Prefect server answers at {url}; start one with `iro server start` or set "
        "PREFECT_API_URL",
    )
    assert not (tmp_path / "store").exists()


def test_a_good_config_passes_every_check(tmp_path, tiny_lm, capsys):
    """The checks above refuse bad input only: the same inputs, correct, pass."""
    path = good_config(tmp_path, tiny_lm)
    check_run_inputs(load_config(path), iterations=2, evaluate=True)
    assert main(["check", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["run_name"] == "bad-input"
    reward = WeightedSum([(FixedReward(np.array([0.5, -1.0, 2.0])), 2.0)])
    assert reward.score(["p"] * 3, ["a", "b", "c"]).tolist() == [1.0, -2.0, 4.0]
