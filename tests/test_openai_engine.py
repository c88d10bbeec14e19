"""The OpenAI-compatible engine's failure handling (the happy path runs against a real vLLM server
in the slow tests)."""

import socket

import pytest

from iro.config import ConfigError, parse_config
from iro.engines.base import ContinuationRequest, SamplingSettings
from iro.engines.openai_engine import EndpointError, OpenAIEngine


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_retried_then_named(tiny_tokenizer):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    engine = OpenAIEngine(
        base_url=url,
        model="m",
        tokenizer=tiny_tokenizer,
        api_key="k",
        max_retries=2,
        backoff_s=0.01,
    )
    with pytest.raises(EndpointError, match=rf"endpoint {url} failed 3 times"):
        engine.continue_batch([ContinuationRequest((3, 4), 2, 4, seed=0)], SamplingSettings())


def test_engine_and_endpoint_must_agree():
    with pytest.raises(ConfigError, match=r"policy\.endpoint is required with engine: openai"):
        parse_config({"policy": {"engine": "openai"}})
    with pytest.raises(ConfigError, match="only then"):
        parse_config({"policy": {"endpoint": {"base_url": "http://x/v1", "model": "m"}}})
