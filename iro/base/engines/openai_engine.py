"""Any OpenAI-compatible completions endpoint: a `vllm serve` server or a hosted model.

Chunk-level search needs nothing but continuations, so a model whose weights the user does not
have can still be aligned. A local tokenizer of the served model renders prompts and counts
tokens; the prefix goes to the server as token ids (vLLM servers accept them, which keeps the
prefix exact) or as text (any completions API).

Failures are retried with exponential backoff and then raised as `EndpointError` naming the
endpoint: there is no silent fallback to another engine, which would change the results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from iro.base.engines.base import Continuation, ContinuationRequest, Engine, SamplingSettings

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint refused a request or kept failing after retries."""


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
        backoff_s: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        from openai import OpenAI

        self.base_url = base_url
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.prompt_as_token_ids = prompt_as_token_ids
        self.supports_top_k = supports_top_k
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        # retries are ours (to name the endpoint in the final error), not the client's
        self._client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def _call(self, request: ContinuationRequest, sampling: SamplingSettings):
        import openai

        prompt = (
            list(request.prefix_ids)
            if self.prompt_as_token_ids
            else self.tokenizer.decode(request.prefix_ids)
        )
        extra = {"top_k": sampling.top_k} if self.supports_top_k and sampling.top_k > 0 else None
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._client.completions.create(
                    model=self.model,
                    prompt=prompt,
                    n=request.n,
                    max_tokens=request.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=request.seed,
                    extra_body=extra,
                )
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError) as err:  # fmt: skip
                last_error = err
                if attempt < self.max_retries:
                    delay = self.backoff_s * 2**attempt
                    log.warning("endpoint %s: %s; retrying in %.1f s", self.base_url, err, delay)
                    time.sleep(delay)
            except openai.APIStatusError as err:  # a refusal (4xx): retrying will not help
                raise EndpointError(f"endpoint {self.base_url} refused the request: {err}") from err
        raise EndpointError(
            f"endpoint {self.base_url} failed {self.max_retries + 1} times; last error: {last_error}"
        ) from last_error

    def _continue_one(
        self, request: ContinuationRequest, sampling: SamplingSettings
    ) -> list[Continuation]:
        response = self._call(request, sampling)
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != request.n:
            raise EndpointError(
                f"endpoint {self.base_url} returned {len(choices)} of {request.n} samples"
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
        # concurrent requests let the server batch them, as one in-process call would
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda r: self._continue_one(r, sampling), requests))
