"""Pick and cache the generation engine a policy config asks for (one engine per process)."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

from iro.core.config import PolicyConfig
from iro.core.engines.base import Engine
from iro.core.models import resolve_model

log = logging.getLogger(__name__)

# Starting vLLM costs ~20 s, so each process keeps one engine per policy setting and reuses it.
_ENGINES: dict[tuple, Engine] = {}


@functools.cache
def resolve_backend(requested: str) -> str:
    """The back end `policy.engine` means here: auto is vllm when installed, else hf."""
    vllm_installed = importlib.util.find_spec("vllm") is not None
    if requested == "vllm" and not vllm_installed:
        raise RuntimeError("policy.engine is 'vllm' but vLLM is not installed; run `make install`")
    if requested == "auto":
        if vllm_installed:
            return "vllm"
        log.warning("vLLM is not installed: generating with the (slower) transformers back end")
        return "hf"
    return requested


def _openai_engine(policy: PolicyConfig, model_path: str) -> Engine:
    from transformers import AutoTokenizer

    from iro.core.engines.openai_engine import OpenAIEngine

    endpoint = policy.endpoint
    api_key = "unused"  # a local vLLM server ignores it; the client insists on one
    if endpoint.api_key_env:
        api_key = os.environ.get(endpoint.api_key_env, "")
        if not api_key:
            raise RuntimeError(
                f"policy.endpoint.api_key_env names {endpoint.api_key_env}, which is not set"
            )
    return OpenAIEngine(
        base_url=endpoint.base_url,
        model=endpoint.model,
        tokenizer=AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=policy.trust_remote_code
        ),
        api_key=api_key,
        prompt_as_token_ids=endpoint.prompt_as_token_ids,
        supports_top_k=endpoint.supports_top_k,
        timeout_s=endpoint.timeout_s,
        max_retries=endpoint.max_retries,
        retry_delay_s=endpoint.retry_delay_s,
        concurrency=endpoint.concurrency,
    )


def get_engine(policy: PolicyConfig, cache_dir: str | None, seed: int) -> Engine:
    backend = resolve_backend(policy.engine)
    key = (backend, policy, cache_dir, seed)
    if key not in _ENGINES:
        model_path = resolve_model(policy.model, cache_dir)
        if backend == "openai":
            _ENGINES[key] = _openai_engine(policy, model_path)
        elif backend == "vllm":
            from iro.core.engines.vllm_engine import VLLMEngine

            _ENGINES[key] = VLLMEngine(
                model_path,
                dtype=policy.dtype,
                max_model_len=policy.max_model_len,
                gpu_memory_utilization=policy.gpu_memory_utilization,
                cpu_kv_cache_gib=policy.cpu_kv_cache_gib,
                trust_remote_code=policy.trust_remote_code,
                seed=seed,
                tensor_parallel_size=policy.tensor_parallel_size,
                compile=policy.compile,
            )
        else:
            from iro.core.engines.hf_engine import HFEngine

            _ENGINES[key] = HFEngine(
                model_path, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code
            )
    return _ENGINES[key]
