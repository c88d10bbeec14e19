"""Composition of several runs' value models at decoding time (`guidance.compose`), the CLI's
`--with` / `--strength`, and which method a run's iterations are evaluated with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iro.app.cli import _strengths
from iro.core.config import ConfigError, parse_config
from iro.pipeline.aligned import parse_run_ref
from iro.pipeline.guidance import compose
from iro.pipeline.methods import guided_method

A, B = [Path("a1"), Path("a2")], [Path("b1")]


def test_a_strength_divides_its_runs_betas():
    dirs, betas = compose([(A, [1.0, 2.0], 2.0), (B, [0.5], 1.0)])
    assert dirs == [*A, *B]
    assert betas == [0.5, 1.0, 0.5]


def test_the_composed_sum_is_the_strength_weighted_sum_of_each_runs_own_sum():
    values = {Path("a1"): 0.3, Path("a2"): -0.2, Path("b1"): 0.7}
    dirs, betas = compose([(A, [1.0, 2.0], 3.0), (B, [0.5], 0.25)])
    composed = sum(values[d] / b for d, b in zip(dirs, betas, strict=True))
    expected = 3.0 * (0.3 / 1.0 - 0.2 / 2.0) + 0.25 * (0.7 / 0.5)
    assert np.isclose(composed, expected)


def test_strength_zero_leaves_a_run_out():
    assert compose([(A, [1.0, 1.0], 0.0), (B, [1.0], 1.0)]) == (B, [1.0])


def test_a_negative_strength_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        compose([(A, [1.0, 1.0], -1.0)])


def test_beta_pairs_name_a_run_and_a_number():
    assert _strengths(["demo-vas=2", "sentiment-vas=0.5"]) == {
        "demo-vas": 2.0,
        "sentiment-vas": 0.5,
    }
    for bad in ("demo-vas", "demo-vas=lots", "../x=1"):
        with pytest.raises(ConfigError):
            _strengths([bad])


def test_a_run_reference_may_name_an_iteration():
    assert parse_run_ref("sentiment-vas") == ("sentiment-vas", None)
    assert parse_run_ref("sentiment-vas@2") == ("sentiment-vas", 2)
    with pytest.raises(ConfigError, match="RUN@ITERATION"):
        parse_run_ref("sentiment-vas@last")


def test_iterations_are_evaluated_with_the_value_guided_decode_mode():
    assert guided_method(parse_config({})) == "iro"
    assert guided_method(parse_config({"decode": {"mode": "vas"}})) == "vas"
    assert guided_method(parse_config({"decode": {"mode": "bon"}})) == "iro"


A_WORDS, B_WORDS = ("summary", "short", "sentence"), ("file", "path", "data")


def _favouring(words, tiny_lm, tokenizer, directory: Path) -> Path:
    """A vocabulary-head value model whose V(s + a) is 1 for the given words, else 0."""
    import torch

    from iro.valuefn.model import TokenValueModel

    model = TokenValueModel.from_causal_lm(str(tiny_lm), 1, head="vocabulary")
    with torch.no_grad():
        model.value_head.weight.zero_()
        model.value_head.bias.zero_()
        for word in words:
            model.value_head.bias[tokenizer.convert_tokens_to_ids(word)] = 1.0
    model.save(directory, tokenizer)
    return directory


def _share(responses, words) -> float:
    tokens = [w for r in responses for w in r.split()]
    return sum(w in words for w in tokens) / max(len(tokens), 1)


def test_raising_one_runs_beta_raises_that_runs_reward(tiny_lm, tiny_tokenizer, tmp_path, capsys):
    """Two runs' value models, each standing for its own reward (the share of its words); the
    request's strength for one of them moves the output towards that reward."""
    import json

    from iro.app.cli import main

    cfg = parse_config(
        {
            "policy": {"model": str(tiny_lm), "engine": "hf"},
            "data": {"use_chat_template": False, "prompt_template": "{prompt}"},
            "sampling": {"max_new_tokens": 8, "temperature": 1.0, "top_k": 0},
            "value": {"max_length": 64, "backbone": str(tiny_lm)},
            "decode": {"mode": "vas", "token_top_k": 40},
        }
    )
    for run, words in (("summaries", A_WORDS), ("files", B_WORDS)):
        value_dir = _favouring(words, tiny_lm, tiny_tokenizer, tmp_path / f"{run}-v1")
        record = {
            "iteration": 1,
            "config": cfg.model_dump(),
            "policy": {"value_models": [str(value_dir)], "betas": [1.0]},
        }
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "iteration-1.json").write_text(json.dumps(record))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["the list of data", "a new name", "one object", "the value"]))

    def responses(*strengths: str) -> list[str]:
        args = ["decode", "--run", "summaries", "--with", "files", "--store", str(tmp_path)]
        args += ["--prompts-file", str(prompts)]
        names = ("--strength", "--beta")  # one option under two names: each run gets one here
        assert main([*args, *(f"{names[i % 2]}={s}" for i, s in enumerate(strengths))]) == 0
        return [json.loads(line)["response"] for line in capsys.readouterr().out.splitlines()]

    low, high = responses("summaries=0", "files=1"), responses("summaries=4", "files=1")
    assert _share(high, A_WORDS) > _share(low, A_WORDS) + 0.3
    low, high = responses("summaries=1", "files=0"), responses("summaries=1", "files=4")
    assert _share(high, B_WORDS) > _share(low, B_WORDS) + 0.3
