"""Chat completions against any OpenAI-compatible endpoint, with retries and a failure count.

Shared by the LLM-judge reward and the pairwise win-rate judge. The API key is resolved before
any call (a missing key is a clear error) and is held only by the client: it is never part of
a repr, a log line, a config slice or an artifact.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


class MissingAPIKeyError(ValueError):
    """No API key for an OpenAI-compatible endpoint; raised before any request is made."""


def resolve_api_key(env_var: str = "OPENAI_API_KEY", explicit: str | None = None) -> str:
    """The key given explicitly (e.g. from a Prefect Secret), else the environment's."""
    key = explicit or os.environ.get(env_var, "")
    if not key.strip():
        raise MissingAPIKeyError(
            f"no API key: set the {env_var} environment variable (a local server that needs no "
            "key still wants a placeholder, e.g. EMPTY) or name a Prefect Secret in the config"
        )
    return key


@dataclass
class ChatClient:
    """One model behind one endpoint; `complete_many` runs requests concurrently."""

    model: str
    api_key: str = field(repr=False)
    base_url: str | None = None  # None: the OpenAI API
    max_tokens: int = 256
    temperature: float = 0.0
    max_retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    concurrency: int = 4
    extra_body: dict | None = None  # server-specific request fields (e.g. vLLM structured outputs)
    failures: int = field(default=0, init=False)
    requests: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    @cached_property
    def _client(self):
        from openai import OpenAI

        # Retries are ours (counted, with backoff), so the client's own are off.
        return OpenAI(
            api_key=self.api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )

    def complete(self, messages: Messages) -> str | None:
        """The answer's text, or None once every retry failed (counted in `failures`)."""
        import openai

        self._count("requests")
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    extra_body=self.extra_body,
                )
                return response.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.APIStatusError) as err:
                retryable = not isinstance(err, openai.APIStatusError) or err.status_code in (
                    408, 409, 429, 500, 502, 503, 504,
                )  # fmt: skip
                if isinstance(err, openai.AuthenticationError):
                    raise  # a wrong key will not get better by retrying
                if not retryable or attempt == self.max_retries:
                    log.warning("request to %s failed for good: %s", self.model, type(err).__name__)
                    break
                delay = self.backoff_s * 2**attempt
                log.info(
                    "request to %s failed (%s); retry in %.1fs",
                    self.model,
                    type(err).__name__,
                    delay,
                )
                time.sleep(delay)
        self._count("failures")
        return None

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.complete, batch))
