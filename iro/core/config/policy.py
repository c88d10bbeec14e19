"""The frozen base policy and the engine or endpoint that serves it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from iro.core.config.base import EMBEDDED_MODEL, EnvVarName, Section
from iro.core.precision import resolve_dtype


class EndpointConfig(Section):
    """An OpenAI-compatible completions endpoint serving the policy (policy.engine: openai)."""

    base_url: str = Field(..., description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., description="the model name the endpoint serves")
    api_key_env: EnvVarName | None = Field(None, description="env var holding the API key, if any")
    prompt_as_token_ids: bool = Field(True, description="vLLM servers: exact prefixes; false: text")
    supports_top_k: bool = Field(True, description="send top_k (vLLM servers accept it)")
    timeout_s: float = Field(
        120.0,
        gt=0,
        description="seconds to wait for the answer to one request before it counts as failed "
        "and is retried",
    )
    max_retries: int = Field(
        4,
        ge=0,
        description="retries of a failed request (no answer, a refused connection, HTTP "
        "408/409/429/5xx, an answer that is no completion) before the run stops; 0: none",
    )
    retry_delay_s: float = Field(
        0.5, gt=0, description="the first retry's wait; each later one waits twice as long"
    )
    concurrency: int = Field(
        8, ge=1, description="requests in flight at once; more lets the server batch more"
    )


class PolicyConfig(Section):
    """The frozen base policy pi_base."""

    model: str = Field(
        EMBEDDED_MODEL,
        description="embedded:NAME, a local checkpoint dir or a hub id (with engine openai: the "
        "served model's tokenizer)",
    )
    engine: Literal["auto", "vllm", "hf", "openai"] = Field(
        "auto",
        description="what generates the chunk-level methods' samples: vllm, hf (transformers, "
        "slower) or openai (a served model, policy.endpoint); auto: vllm where it is installed, "
        "else hf. The engines draw different samples for one seed. Token-level methods (vas, "
        "args, ivl) always run on transformers",
    )
    endpoint: EndpointConfig | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32",
        description="precision of the policy's weights and computation on the vllm and hf "
        "engines and in token-level decoding; bfloat16 or float16 halve its memory; auto: "
        "bfloat16 where the GPU (or the CPU, with AVX512-BF16 or AMX) computes it natively, "
        "else float32, resolved when the config is read",
    )
    max_model_len: int = Field(
        1024,
        ge=64,
        description="longest sequence, prompt plus response in tokens, that vLLM serves; a "
        "prompt longer than max_model_len - sampling.max_new_tokens stops the run before any "
        "generation, naming the prompt",
    )
    trust_remote_code: bool = Field(
        False,
        description="let transformers run the Python code a model's repository ships (some "
        "architectures need it), for the policy, its tokenizer, the value trunk and IVL's "
        "models; set it only for models you trust",
    )
    # vLLM memory knobs: the defaults fit this project's 2-core, 24 GiB CPU machines.
    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        le=1,
        description="vLLM on a GPU: the share of its memory vLLM takes for the policy's weights "
        "and KV cache; lower it to leave room for value models scoring on the same GPU "
        "(value.score_device)",
    )
    cpu_kv_cache_gib: int = Field(
        1,
        ge=1,
        description="vLLM on the CPU: GiB of memory for its KV cache (VLLM_CPU_KVCACHE_SPACE, "
        "which wins where already set); more keeps more prompts' prefixes cached at once",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM on GPUs: split the policy across this many GPUs of one machine"
    )
    compile: bool = Field(
        False,
        description="vLLM compiles the policy (torch.compile; on GPUs also CUDA graphs): faster "
        "decoding after a slower start. On the 2-core CPU: 50-70 s more to start an engine, ~8% "
        "faster search (benchmarks/decode_speed.py). Compiled kernels round differently, so the "
        "samples differ from eager mode's",
    )
    prompts_per_call: int | None = Field(
        32,
        ge=1,
        description="a search feeds the engine this many prompts at a time (null: all), so that "
        "their prefixes stay cached from chunk to chunk; on vLLM and endpoints samples do not "
        "depend on it (the transformers engine seeds each batch once, so there they do). 1 GiB "
        "of KV cache holds ~23k tokens of the embedded model: 32 prompts of ~350 tokens, beams",
    )

    @field_validator("dtype")
    @classmethod
    def _resolve_auto_dtype(cls, dtype: str) -> str:
        return resolve_dtype(dtype)

    @model_validator(mode="after")
    def _endpoint_matches_engine(self) -> PolicyConfig:
        if (self.engine == "openai") != (self.endpoint is not None):
            raise ValueError("policy.endpoint is required with engine: openai, and only then")
        if self.compile and self.engine in ("hf", "openai"):
            raise ValueError(f"policy.compile compiles vLLM's model; engine {self.engine} has none")
        return self
