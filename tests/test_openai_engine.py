"""The OpenAI-compatible engine's failure handling (the happy path runs against a real vLLM server
in the slow tests)."""

import socket

import pytest

from iro.core.config import ConfigError, parse_config
from iro.core.engines.base import ContinuationRequest, SamplingSettings
from iro.core.engines.openai_engine import EndpointError, OpenAIEngine


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
    )
    with pytest.raises(EndpointError, match=rf"endpoint {url} failed 3 times"):
        engine.continue_batch([ContinuationRequest((3, 4), 2, 4, seed=0)], SamplingSettings())


def test_the_failure_names_only_settings_the_config_has(tiny_lm, monkeypatch):
    """The engine is built from a config as a run builds it; every `policy.endpoint.X` its error
    names is a key the schema accepts, and the backoff it reports is the configured one."""
    import re

    from iro.core.engines import factory

    url = f"http://127.0.0.1:{closed_port()}/v1"
    endpoint = {"base_url": url, "model": "m", "max_retries": 1, "retry_delay_s": 0.01}
    cfg = parse_config(
        {"policy": {"model": str(tiny_lm), "engine": "openai", "endpoint": endpoint}}
    )
    monkeypatch.setattr(factory, "_ENGINES", {})
    engine = factory.get_engine(cfg.policy, None, 0)
    with pytest.raises(EndpointError) as err:
        engine.continue_batch([ContinuationRequest((3, 4), 2, 4, seed=0)], SamplingSettings())
    named = set(re.findall(r"policy\.endpoint\.([a-z_]+)", str(err.value)))
    assert named and named <= set(type(cfg.policy.endpoint).model_fields), named
    assert "backoff from 0.01 s" in str(err.value)


def test_engine_and_endpoint_must_agree():
    with pytest.raises(ConfigError, match=r"policy\.endpoint is required with engine: openai"):
        parse_config({"policy": {"engine": "openai"}})
    with pytest.raises(ConfigError, match="only then"):
        parse_config({"policy": {"endpoint": {"base_url": "http://x/v1", "model": "m"}}})


@pytest.mark.slow
def test_endpoint_search_equals_in_process_vllm(openai_server, monkeypatch):
    """The same seeds give the same samples through a `vllm serve` endpoint as in-process, so a
    run's results do not depend on where the frozen policy is served; EOS is handled alike."""
    from iro.core.config import PolicyConfig, RunConfig
    from iro.core.engines.factory import get_engine
    from iro.pipeline.generation import policy_tokenizer
    from iro.valuefn.search import SearchSettings, guided_search

    monkeypatch.setenv("IRO_TEST_ENDPOINT_KEY", openai_server.api_key)
    endpoint_policy = PolicyConfig(
        engine="openai",
        endpoint={
            "base_url": openai_server.base_url,
            "model": openai_server.model,
            "api_key_env": "IRO_TEST_ENDPOINT_KEY",
        },
    )
    remote = get_engine(endpoint_policy, None, seed=0)
    local = get_engine(PolicyConfig(engine="vllm"), None, seed=0)
    tokenizer = policy_tokenizer(RunConfig())
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Describe {w} in one sentence."}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for w in ("rain", "a library", "bread")
    ]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    sampling = SamplingSettings(temperature=0.8, top_p=0.95, top_k=50)
    for settings in (SearchSettings.best_of_n(3, 32), SearchSettings(2, 2, 6, 24)):
        pools = [
            guided_search(e, tokenizer, texts, ids, settings, sampling, None, seed=4)
            for e in (remote, local)
        ]
        assert [[c.text for c in pool] for pool in pools[0]] == [
            [c.text for c in pool] for pool in pools[1]
        ]
        assert [[c.ended for c in pool] for pool in pools[0]] == [
            [c.ended for c in pool] for pool in pools[1]
        ]
