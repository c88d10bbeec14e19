"""Every decode mode through one interface, on a tiny policy and value model (transformers engine)."""

import json

import pandas as pd
import pytest
import torch

from iro.app.cli import main
from iro.core.config import parse_config
from iro.core.methods import METHODS
from iro.pipeline.decoder import decode
from iro.pipeline.execution import generate, score_rows
from iro.pipeline.methods import samples_per_prompt, search_settings
from iro.valuefn.model import TokenValueModel
from iro.valuefn.residual import ResidualValueNetwork

# raw prompts, as `iro decode` takes them
RAW_PROMPTS = {"use_chat_template": False, "prompt_template": "{prompt}"}


def tiny_decode_config(lm, data: dict) -> dict:
    """A run named `tiny` on the tiny policy: a length reward, w = k = 2, l = 2, 6 new tokens."""
    return {
        "run_name": "tiny",
        "policy": {"model": str(lm), "engine": "hf"},
        "data": data,
        "reward": {
            "components": [
                {"type": "length_penalty", "options": {"target_words": 2, "per_word": 0.1}}
            ]
        },
        "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_k": 0},
        "search": {"beams": 2, "children": 2, "chunk_tokens": 2},
        "value": {"max_length": 64},
        "decode": {"token_top_k": 5},
    }


@pytest.fixture(scope="module")
def tiny_run(tiny_lm, tiny_tokenizer, tmp_path_factory):
    """A finished-looking run: its summary names a tiny policy and one tiny value model."""
    root = tmp_path_factory.mktemp("store")
    torch.manual_seed(0)
    value_dir = root / "v1"
    TokenValueModel.from_causal_lm(str(tiny_lm)).save(value_dir, tiny_tokenizer)
    cfg = parse_config(tiny_decode_config(tiny_lm, RAW_PROMPTS))
    run_dir = root / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    summary = {
        "iteration": 1,
        "config": cfg.model_dump(),
        "policy": {"value_models": [str(value_dir)], "betas": [1.0]},
    }
    (run_dir / "iteration-1.json").write_text(json.dumps(summary))
    ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1).save(root / "residual", tiny_tokenizer)
    return root, cfg, value_dir


@pytest.mark.parametrize("mode", list(METHODS))
def test_every_mode_answers_every_prompt(tiny_run, mode):
    root, cfg, value_dir = tiny_run
    guide = root / "residual" if METHODS[mode].uses_residual else value_dir
    prompts = pd.DataFrame(
        {"id": ["a", "b"], "prompt": ["the list of data", "a file"], "reference": None}
    )
    out = decode(cfg, prompts, mode, [guide], seed=1)
    assert out["prompt_id"].tolist() == ["a", "b"]
    assert (out["num_tokens"] <= 6).all() and out["response"].map(type).eq(str).all()
    again = decode(cfg, prompts, mode, [guide], seed=1)
    assert again["response"].tolist() == out["response"].tolist()  # seeded


def test_specrej_answers_with_the_best_finished_candidate_by_reward(tiny_run):
    _, cfg, value_dir = tiny_run
    cfg = cfg.model_copy(
        update={
            "search": cfg.search.model_copy(
                update={
                    "rejection": cfg.search.rejection.model_copy(
                        update={"samples": 6, "keep_fraction": 0.5, "chunk_tokens": 2}
                    )
                }
            )
        }
    )
    prompts = pd.DataFrame(
        {"id": ["a", "b"], "prompt": ["the list of data", "a file"], "reference": None}
    )
    out = decode(cfg, prompts, "specrej", [value_dir], seed=3)

    settings = search_settings(cfg, "specrej")
    assert (settings.beams, settings.children, settings.chunk_tokens) == (6, 1, 2)
    assert settings.keep_fraction == 0.5 and samples_per_prompt(cfg, "specrej") == 6
    pools = score_rows(cfg, generate(cfg, prompts, settings, [value_dir], seed=3))
    assert pools.groupby("prompt_id").size().le(6).all()
    best = pools.groupby("prompt_id", sort=False)["reward"].max()
    assert out["reward"].tolist() == best.tolist()
    assert set(out["response"]) <= set(pools["response"])


def test_vas_without_value_models_is_an_error(tiny_run):
    _, cfg, _ = tiny_run
    prompts = pd.DataFrame({"id": ["a"], "prompt": ["x"], "reference": None})
    with pytest.raises(ValueError, match="needs at least one value model"):
        decode(cfg, prompts, "vas", [], seed=0)


def test_cli_decode_uses_the_runs_value_models(tiny_run, capsys):
    root, _, _ = tiny_run
    assert (
        main(
            [
                "decode",
                "--run",
                "tiny",
                "--store",
                str(root),
                "--prompt",
                "the document",
                "--mode",
                "vas",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["mode"] == "vas" and line["iteration"] == 1 and isinstance(line["response"], str)
    assert main(["decode", "--run", "nope", "--store", str(root), "--prompt", "x"]) == 2
    assert "has no finished iteration" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["bon", "iro"])
def test_cli_decode_reports_what_each_answer_cost(tiny_run, tmp_path, capsys, mode):
    """Per prompt: the policy's tokens, the value models' tokens and the reward calls, as the
    benchmark counts them (w = k = 2: bon picks by reward among 4, iro reads its value model)."""
    root, _, _ = tiny_run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the list of data\na file\n")
    args = ["decode", "--run", "tiny", "--store", str(root), "--prompts-file", str(prompts)]
    assert main([*args, "--mode", mode]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and lines[0]["cost"] == lines[1]["cost"]  # the call's, shared
    cost = lines[0]["cost"]
    assert cost["seconds"] > 0 and cost["policy_tokens"] >= cost["sampled_tokens"] >= 4
    assert cost["sampled_tokens"] <= 4 * 7  # 4 candidates of up to 6 tokens and an end
    if mode == "bon":
        assert (cost["value_tokens"], cost["reward_calls"]) == (0, 4)  # the final pick's
    else:
        assert cost["value_tokens"] > 0 and cost["reward_calls"] >= 4


def test_cli_decode_takes_exactly_one_source_of_prompts(tiny_run, tmp_path, capsys):
    root, _, _ = tiny_run
    args = ["decode", "--run", "tiny", "--store", str(root)]
    for extra in ([], ["--prompt", "x", "--prompts-file", str(tmp_path / "p.txt")]):
        with pytest.raises(SystemExit) as stopped:
            main([*args, *extra])
        assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "one of the arguments --prompt --prompts-file is required" in err
    assert "not allowed with argument --prompt" in err


def test_cli_decode_reads_multi_line_prompts_as_json_lines_from_stdin(
    tiny_run, tmp_path, capsys, monkeypatch
):
    import io

    root, _, _ = tiny_run
    prompts = ["first line\nsecond line", "one more"]
    lines = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    args = ["decode", "--run", "tiny", "--store", str(root), "--mode", "base"]
    assert main([*args, "--prompts-file", "-", "--jsonl"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["prompt"] for r in out] == prompts

    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"text": "no prompt"}))
    assert main([*args, "--prompts-file", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "line 2: expected an object with a 'prompt' string" in captured.err
    assert captured.out == ""  # nothing decoded


def test_args_is_an_evaluation_baseline(tiny_run, tmp_path):
    from iro.pipeline.runner import Pipeline

    _, cfg, _ = tiny_run
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"eval_prompts": 2}),
            "store": cfg.store.model_copy(update={"root": str(tmp_path)}),
        }
    )
    artifact = Pipeline(cfg).evaluate("args", [])
    decode_keys = {k: v for k, v in artifact.manifest["config"].items() if k.startswith("decode.")}
    assert decode_keys == {
        "decode.token_top_k": 5,
        "decode.args_weight": 1.0,
        "decode.greedy": False,
    }
    assert (
        artifact.metrics["samples_per_prompt"] == 1 and 0.0 <= artifact.metrics["win_rate"] <= 1.0
    )
    table = artifact.table()
    assert (
        len(table) == 2
        and table["reward"].notna().all()
        and table["reference_reward"].notna().all()
    )
