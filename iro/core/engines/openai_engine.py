"""Any OpenAI-compatible completions endpoint: a `vllm serve` server or a hosted model.

Chunk-level search needs nothing but continuations, so a model whose weights the user does not
have can still be aligned. A local tokenizer of the served model renders prompts and counts
tokens; the prefix goes to the server as token ids (vLLM servers accept them, which keeps the
prefix exact) or as text (any completions API).

Failures (the server down, slower than `policy.endpoint.timeout_s`, overloaded or answering
garbage) are retried `policy.endpoint.max_retries` times with exponential backoff and then raised
as `EndpointError` naming the endpoint, what happened, the attempts and the setting to change
(`iro.core.endpoint`); the step's other requests still waiting are not sent. There is no silent
fallback to another engine, which would change the results.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from iro.core.endpoint import Endpoint, EndpointError
from iro.core.engines.base import Continuation, ContinuationRequest, Engine, SamplingSettings

__all__ = ["EndpointError", "OpenAIEngine"]


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        tokenizer,
        api_key: str,
        prompt_as_token_ids: bool = True,
        supports_top_k: bool = True,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        concurrency: int = 8,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.endpoint = Endpoint(
            base_url=base_url,
            model=model,
            api_key=api_key,
            max_retries=max_retries,
            timeout_s=timeout_s,
            retry_delay_s=retry_delay_s,
            settings="policy.endpoint.",
        )
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.prompt_as_token_ids = prompt_as_token_ids
        self.supports_top_k = supports_top_k
        self.concurrency = concurrency

    def _continue_one(
        self, request: ContinuationRequest, sampling: SamplingSettings
    ) -> list[Continuation]:
        prompt = (
            list(request.prefix_ids)
            if self.prompt_as_token_ids
            else self.tokenizer.decode(request.prefix_ids)
        )
        extra = {"top_k": sampling.top_k} if self.supports_top_k and sampling.top_k > 0 else None
        response = self.endpoint.complete(
            prompt=prompt,
            n=request.n,
            max_tokens=request.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=request.seed,
            extra_body=extra,
        )
        if not getattr(response, "choices", None):  # the endpoint retries such answers
            raise EndpointError(f"endpoint {self.endpoint.url} answered with no completions")
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != request.n:
            raise EndpointError(
                f"endpoint {self.endpoint.url} returned {len(choices)} of {request.n} samples"
            )
        return [
            Continuation(
                token_ids=tuple(self.tokenizer(c.text, add_special_tokens=False).input_ids),
                ended=c.finish_reason == "stop",
            )
            for c in choices
        ]

    def continue_batch(
        self, requests: Sequence[ContinuationRequest], sampling: SamplingSettings
    ) -> list[list[Continuation]]:
        # concurrent requests let the server batch them, as one in-process call would; once one
        # has failed for good the step fails, so the requests not yet sent are skipped
        failed = threading.Event()

        def one(request: ContinuationRequest) -> list[Continuation] | None:
            if failed.is_set():
                return None
            try:
                return self._continue_one(request, sampling)
            except BaseException:
                failed.set()
                raise

        # requests start in order, so the first failure is raised before any skipped one is read
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, requests))
