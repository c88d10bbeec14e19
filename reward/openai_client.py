"""Chat completions against any OpenAI-compatible endpoint, counting the requests that failed.

Shared by the LLM-judge reward and the pairwise win-rate judge; retries and the error naming the
endpoint come from `iro.base.endpoint`. The API key is resolved before
any call (a missing key is a clear error) and is held only by the client: it is never part of
a repr, a log line, a config slice or an artifact.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from iro.base.endpoint import Endpoint, EndpointError

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
    def _endpoint(self) -> Endpoint:
        return Endpoint(
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
        )

    def complete(self, messages: Messages) -> str | None:
        """The answer's text, or None if the request failed for good (counted in `failures`).

        A rejected key (HTTP 401) raises `EndpointError`: it would fail every request alike.
        """
        self._count("requests")
        try:
            response = self._endpoint.chat(
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                extra_body=self.extra_body,
            )
        except EndpointError as err:
            if err.status_code == 401:
                # the message names the endpoint with the key masked; the chained client error
                # it came from may quote the key (servers echo the rejected header), and a
                # traceback would print it
                raise EndpointError(str(err), err.status_code) from None
            log.warning("%s", err)
            self._count("failures")
            return None
        try:
            return response.choices[0].message.content or ""
        except (AttributeError, IndexError, KeyError, TypeError):
            # a proxy's HTML page or JSON without choices: what it says is not logged (it may
            # echo the request's headers)
            log.warning(
                "endpoint %s (model %s) answered without a completion (%s); counted as a failure",
                self._endpoint.url, self.model, type(response).__name__,
            )  # fmt: skip
            self._count("failures")
            return None

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.complete, batch))
