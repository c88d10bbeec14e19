"""The sentiment, HF sequence-classification, TL;DR and LLM-judge rewards on small inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iro.reward import build_reward
from iro.reward.base import check_scores
from iro.reward.llm_judge import LLMJudgeReward, parse_rating
from iro.reward.openai_client import MissingAPIKeyError
from tests.conftest import make_tokenizer

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"


def test_vader_sentiment_orders_texts():
    reward = build_reward([("sentiment", 1.0, {})])
    scores = reward.score(
        ["p"] * 3, ["I love this, it is great!", "It is a file.", "Awful, I hate it."]
    )
    assert scores[0] > 0.5 and scores[1] == 0.0 and scores[2] < -0.5


def _tiny_classifier(directory, chat_template: str | None):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = make_tokenizer()
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=1,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("chat_template", [None, CHAT_TEMPLATE])
def test_hf_sequence_classifier_loads_and_scores(tmp_path, chat_template):
    model_dir = _tiny_classifier(tmp_path / "rm", chat_template)
    reward = build_reward([("hf_classifier", 1.0, {"model": str(model_dir), "batch_size": 2})])
    rm = reward.components[0][0]
    prompts = ["the document", "a file", "the list"]
    responses = ["returns the value", "a new string", "the list of data"]
    scores = check_scores("hf", reward.score(prompts, responses), 3)
    assert np.unique(scores).size == 3
    # batching and padding do not change a score
    np.testing.assert_allclose(rm.score(prompts[:1], responses[:1]), scores[:1], atol=1e-5)
    assert rm.uses_chat_template == bool(chat_template)
    if chat_template:
        assert rm.chat_texts(prompts[:1], responses[:1]) == [
            "<|user|> the document <|assistant|> returns the value "
        ]


def test_hf_classifier_label_out_of_range(tmp_path):
    model_dir = _tiny_classifier(tmp_path / "rm", None)
    reward = build_reward([("hf_classifier", 1.0, {"model": str(model_dir), "label": 3})])
    with pytest.raises(ValueError, match="label 3 out of range"):
        reward.score(["a"], ["b"])


def test_hf_classifier_in_bf16_scores_under_autocast_and_keeps_float32_weights(tmp_path):
    model_dir = str(_tiny_classifier(tmp_path / "rm", None))
    prompts, responses = ["the document", "a file"], ["returns the value", "a new string"]
    full, half = (
        build_reward([("hf_classifier", 1.0, {"model": model_dir, "dtype": dtype})])
        for dtype in ("float32", "bfloat16")
    )
    exact, rounded = full.score(prompts, responses), half.score(prompts, responses)
    assert not np.array_equal(exact, rounded)  # the forward really ran in bf16
    np.testing.assert_allclose(rounded, exact, atol=0.05 * np.abs(exact).max())
    assert half.components[0][0].model.dtype == torch.float32


@pytest.mark.parametrize("reward_type", ["hf_classifier", "tldr_reward_model"])
def test_a_reward_model_dtype_that_does_not_exist_is_named(reward_type):
    with pytest.raises(ValueError, match=r"dtype must be one of .*got 'fp8'"):
        build_reward([(reward_type, 1.0, {"model": "unused", "dtype": "fp8"})])


def test_tldr_reward_model_reads_last_token_minus_bias(tmp_path):
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaModel

    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    trunk, head = LlamaModel(config).eval(), torch.nn.Linear(32, 1)
    state = {f"lm_backbone.{k}": v.contiguous() for k, v in trunk.state_dict().items()}
    state |= {f"scalar_head.{k}": v for k, v in head.state_dict().items()}
    directory = tmp_path / "tldr-rm"
    directory.mkdir()
    save_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(
        json.dumps({"base_config": config.to_dict(), "hidden_size": 32, "bias": 0.25})
    )
    tokenizer.save_pretrained(directory)
    reward = build_reward(
        [("tldr_reward_model", 1.0, {"model": str(directory), "template": "{prompt} {response}"})]
    )
    scores = reward.score(["the document", "a file"], ["returns the value of the list", "one"])
    with torch.no_grad():
        ids = tokenizer("a file one", return_tensors="pt")
        expected = head(trunk(**ids).last_hidden_state[0, -1]).item() - 0.25
    assert scores[1] == pytest.approx(expected, abs=1e-5)


def test_llm_judge_reward_needs_a_key_before_any_call(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        LLMJudgeReward(model="gpt-4o-mini")


def test_rating_parse():
    assert parse_rating("8") == 8.0
    assert parse_rating("Rating: 7/10") == 7.0
    assert np.isnan(parse_rating("great"))
    assert np.isnan(parse_rating("42"))
