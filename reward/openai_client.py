"""Chat completions against any OpenAI-compatible endpoint, counting the requests that failed.

Shared by the LLM-judge reward and the pairwise win-rate judge; retries with backoff and the
error naming the endpoint come from `iro.core.endpoint`. `complete_or_stop` also
returns the first request's error that failed for good, and sends nothing more once the endpoint
itself failed (down, slow or answering garbage: the rest would fail alike, each after its
retries). The API key is resolved before any call (a missing key is a clear error) and is held
only by the client: it is never part of a repr, a log line, a config slice or an artifact.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from iro.core.endpoint import Endpoint, EndpointError

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
    retry_delay_s: float = 0.5  # the first retry's backoff; it doubles with each retry
    settings: str = ""  # how the user writes max_retries etc. here, as a prefix (for errors)
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
            retry_delay_s=self.retry_delay_s,
            settings=self.settings,
        )

    def complete(self, messages: Messages) -> str | None:
        """The answer's text, or None if the request failed for good (counted in `failures`).

        A rejected key (HTTP 401) raises `EndpointError`: it would fail every request alike.
        """
        return self._complete(messages, None)

    def _complete(self, messages: Messages, failed: _FirstFailure | None) -> str | None:
        if failed is not None and failed.stop:  # the endpoint is down: the rest would fail too
            self._count("failures")
            return None
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
            if failed is not None:
                failed.record(err)
            return None
        try:
            return response.choices[0].message.content or ""
        except (AttributeError, IndexError, KeyError, TypeError):
            # choices without a message: what it says is not logged (it may echo the request's
            # headers)
            message = (
                f"endpoint {self._endpoint.url} (model {self.model}) answered without a chat "
                f"completion ({type(response).__name__}); check that it serves the chat API"
            )
            log.warning("%s; counted as a failure", message)
            self._count("failures")
            if failed is not None:
                failed.record(EndpointError(message))
            return None

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]:
        """`complete` for each, concurrently; a failed request is None (see `failures`)."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.complete, batch))

    def complete_or_stop(
        self, batch: Sequence[Messages]
    ) -> tuple[list[str | None], EndpointError | None]:
        """`complete` for each, concurrently, and the error of the first request that failed for
        good (None if none did). Once the endpoint itself has failed (down, slow, overloaded,
        answering garbage) no more requests are sent: each would fail alike after its retries;
        those are None and count as failures too."""
        failed = _FirstFailure()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answers = list(pool.map(lambda m: self._complete(m, failed), batch))
        return answers, failed.error


class _FirstFailure:
    """The first request error of a batch (thread-safe); `stop` once the endpoint failed."""

    def __init__(self) -> None:
        self.error: EndpointError | None = None
        self.stop = False
        self._lock = threading.Lock()

    def record(self, err: EndpointError) -> None:
        with self._lock:
            if self.error is None:
                self.error = err
            self.stop = self.stop or err.retryable
