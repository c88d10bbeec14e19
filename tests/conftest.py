"""Fixtures: a tiny word-level tokenizer and a tiny Llama causal LM, made here, in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest_plugins = ["tests.vllm_server"]  # the session's OpenAI-compatible server

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "this",
    "by",
    "summary",
    "returns",
    "return",
    "value",
    "list",
    "object",
    "string",
    "file",
    "path",
    "data",
    "name",
    "new",
    "one",
    "short",
    "sentence",
    "document",
    "function",
    "class",
    "method",
]


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def make_causal_lm(directory: Path, seed: int = 0, tokenizer=None) -> Path:
    """A tiny Llama on `tokenizer` (default: the word-level one above)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """Path of a 2-layer, 32-wide Llama checkpoint with the word-level tokenizer."""
    return make_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


def tiny_value_config(tiny_lm: Path, value: dict, training: dict):
    """A run config whose value stage trains a 1-layer value model of the tiny LM quickly."""
    from iro.core.config import parse_config

    base = {"backbone": str(tiny_lm), "num_layers": 1, "max_length": 64}
    return parse_config(
        {
            "seed": 3,
            "policy": {"model": str(tiny_lm), "engine": "hf"},
            "value": {**base, **value, "training": {"num_train_epochs": 2, **training}},
        }
    )
