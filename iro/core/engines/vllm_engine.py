"""vLLM in-process: every request of a search step goes to the engine as one batch."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from iro.core.config import ConfigError
from iro.core.cost import count_sampling
from iro.core.engines.base import Continuation, ContinuationRequest, Engine, SamplingSettings

log = logging.getLogger(__name__)


class _DropRepeatedThreadWarning(logging.Filter):
    """vLLM's CPU worker warns about torch.set_num_threads on every batch; once is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "set_num_threads" not in record.getMessage()


def tensor_parallel_kwargs(size: int, cuda_devices: int) -> dict[str, int]:
    """What `policy.tensor_parallel_size` adds to vLLM's arguments: nothing at 1, so the CPU path
    stays as it is, and a clear stop where vLLM could not split the policy (its CPU build runs a
    model in one piece; tensor parallelism splits it across GPUs of this machine)."""
    if size == 1:
        return {}
    if cuda_devices == 0:
        raise ConfigError(
            f"policy.tensor_parallel_size is {size}, but this machine has no CUDA device and "
            "vLLM's CPU build cannot split a model across devices: set it to 1"
        )
    if size > cuda_devices:
        raise ConfigError(
            f"policy.tensor_parallel_size is {size}, but this machine has {cuda_devices} CUDA "
            "devices: at most one shard per GPU"
        )
    return {"tensor_parallel_size": size}


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str,
        max_model_len: int,
        gpu_memory_utilization: float,
        cpu_kv_cache_gib: int,
        trust_remote_code: bool,
        seed: int,
        tensor_parallel_size: int = 1,
        compile: bool = False,
    ) -> None:
        import torch

        parallel = tensor_parallel_kwargs(tensor_parallel_size, torch.cuda.device_count())
        # Keep the engine core in this process: Prefect tasks and tests then share one engine,
        # and no worker process has to re-import the caller's module.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gib))
        from vllm import LLM

        logging.getLogger("vllm").addFilter(_DropRepeatedThreadWarning())
        for handler in logging.getLogger("vllm").handlers:
            handler.addFilter(_DropRepeatedThreadWarning())

        log.info(
            "starting vLLM engine for %s (takes ~20 s on CPU%s)",
            model_path,
            ", ~90 s with policy.compile" if compile else "",
        )
        self._llm = LLM(
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            # eager by default: compiling costs more than it saves on short CPU runs
            enforce_eager=not compile,
            load_format="safetensors",  # never unpickle weights
            enable_prefix_caching=True,
            # Beams of a search re-read their shared prefixes every chunk; only whole blocks are
            # reused, and the CPU backend's default 128-token blocks leave ~100 tokens of every
            # prompt to recompute. Measured on 64 prompts of 351 tokens: a repeat costs 8.8 s with
            # 128-token blocks and 2.8 s with 32-token blocks (benchmarks/decode_speed.py).
            block_size=32,
            # Per-request seeds make every sample reproducible whatever else is in the batch, but
            # chunked prefill rewinds seeded generators, which CPU generators cannot do: prefill
            # whole prompts instead.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(8192, max_model_len),
            trust_remote_code=trust_remote_code,
            seed=seed,
            **parallel,
        )
        self.max_model_len = max_model_len
        self.eos_token_id = self._llm.get_tokenizer().eos_token_id
        self._scheduled_tokens = 0
        self._count_scheduled_tokens()

    def _count_scheduled_tokens(self) -> None:
        """Add up the tokens vLLM's scheduler puts through the model at every step: the policy's
        compute, as vLLM itself counts it (prefixes less what the prefix cache served, sampled
        tokens fed back, anything recomputed). `RequestOutput.num_cached_tokens` cannot give it:
        with n > 1 it reports one sample's cache hits only."""
        core = getattr(self._llm.llm_engine.engine_core, "engine_core", None)
        if core is None:
            log.warning("policy tokens are not counted: vLLM's engine core runs in another process")
            return
        schedule = core.scheduler.schedule

        def counted(*args, **kwargs):
            output = schedule(*args, **kwargs)
            self._scheduled_tokens += output.total_num_scheduled_tokens
            return output

        core.scheduler.schedule = counted

    def forget_prefixes(self) -> None:
        self._llm.reset_prefix_cache()

    def continue_batch(
        self, requests: Sequence[ContinuationRequest], sampling: SamplingSettings
    ) -> list[list[Continuation]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompts = [TokensPrompt(prompt_token_ids=list(r.prefix_ids)) for r in requests]
        params = [
            SamplingParams(
                n=r.n,
                max_tokens=r.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                seed=r.seed,
            )
            for r in requests
        ]
        scheduled_before = self._scheduled_tokens
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        results = []
        for output in outputs:
            continuations = []
            for completion in output.outputs:
                ids = tuple(completion.token_ids)
                ended = completion.finish_reason == "stop"
                if ended and ids and ids[-1] == self.eos_token_id:
                    ids = ids[:-1]
                continuations.append(Continuation(token_ids=ids, ended=ended))
            results.append(continuations)
        computed = self._scheduled_tokens - scheduled_before
        count_sampling([len(r.prefix_ids) for r in requests], results, computed)
        return results
