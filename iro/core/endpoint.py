"""One model behind an OpenAI-compatible endpoint, and the one error its requests fail with.

Retries are bounded and ours (the `openai` client's own are off): a refused or dropped connection,
no answer within `timeout_s`, an HTTP 408/409/429/5xx answer, or a 200 answer that is not a
completion (a proxy's HTML page, JSON without choices) is retried up to `max_retries` times, the
n-th retry after `retry_delay_s * 2**(n-1)` seconds (at most MAX_DELAY_S, less up to a quarter at
random so that concurrent requests spread out; a `Retry-After` of up to a minute is honoured). Any
other refusal (a wrong key, a bad request) is not retried: it would fail again. A request that
fails for good raises `EndpointError`, whose message names the endpoint URL, the model, what
happened, how many attempts were made and which setting to change, never the API key or the body
of an answer that was not a completion.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_DELAY_S = 30.0
RETRIED_STATUS = frozenset({408, 409, 429})  # and every 5xx
_sleep = time.sleep  # tests replace it to see the delays without waiting


class EndpointError(RuntimeError):
    """A request to an endpoint failed for good; `status_code` is the HTTP status, if one came.

    `retryable`: the failure was of the kind that is retried (the endpoint down, slow, overloaded
    or answering garbage), as opposed to a refusal of this request.
    """

    def __init__(
        self, message: str, status_code: int | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class _NotACompletion(Exception):
    """A 200 answer without completions; what it said is never shown (it may echo headers)."""

    def __init__(self, response: Any) -> None:
        super().__init__(f"answered without a completion ({type(response).__name__})")


def _is_completion(response: Any) -> bool:
    choices = getattr(response, "choices", None)
    return isinstance(choices, list) and len(choices) > 0


def _retried(err: Exception) -> bool:
    import openai

    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRIED_STATUS or err.status_code >= 500
    return isinstance(err, (openai.APIConnectionError, _NotACompletion))  # timeouts included


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except (AttributeError, TypeError, ValueError):
        return None
    return seconds if 0 < seconds <= 60 else None


class Endpoint:
    """`model` served at `base_url` (None: the OpenAI API, or $OPENAI_BASE_URL).

    `settings`: how the user sets this endpoint's max_retries, timeout_s and retry_delay_s, as a
    prefix of those names (e.g. "policy.endpoint."), for the error message.
    """

    def __init__(
        self,
        *,
        base_url: str | None,
        model: str,
        api_key: str,
        max_retries: int,
        timeout_s: float,
        retry_delay_s: float = 0.5,
        settings: str = "",
    ) -> None:
        from openai import OpenAI

        self.model = model
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.retry_delay_s = retry_delay_s
        self.settings = settings
        self._client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)
        self.url = str(self._client.base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, model={self.model!r})"

    def complete(self, **request: Any) -> Any:
        """`completions.create` for this model."""
        return self._call(self._client.completions.create, request)

    def chat(self, **request: Any) -> Any:
        """`chat.completions.create` for this model."""
        return self._call(self._client.chat.completions.create, request)

    def delay(self, retry: int, err: Exception | None = None) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...)."""
        after = _retry_after(err) if err is not None else None
        if after is not None:
            return after
        full = min(self.retry_delay_s * 2 ** (retry - 1), MAX_DELAY_S)
        return full * (1 - 0.25 * random.random())

    def _call(self, create: Callable[..., Any], request: dict[str, Any]) -> Any:
        import openai

        attempts = 0
        while True:
            attempts += 1
            try:
                response = create(model=self.model, **request)
                if not _is_completion(response):
                    raise _NotACompletion(response)
                return response
            except (openai.APIError, _NotACompletion) as err:
                if not _retried(err) or attempts > self.max_retries:
                    raise self._error(err, attempts) from None  # it may quote the API key
                wait = self.delay(attempts, err)
                log.info(
                    "endpoint %s (model %s): attempt %d of %d failed (%s); retrying in %.2f s",
                    self.url, self.model, attempts, self.max_retries + 1, type(err).__name__, wait,
                )  # fmt: skip
                _sleep(wait)

    def _error(self, err: Exception, attempts: int) -> EndpointError:
        import openai

        failed = "failed" if attempts == 1 else f"failed {attempts} times"
        if isinstance(err, _NotACompletion):
            what = f"HTTP 200 but {err}"
        else:
            what = f"{type(err).__name__}: {err}"
            if err.__cause__ is not None:  # e.g. the connection error under APIConnectionError
                what += f" ({err.__cause__})"
            key = self._client.api_key
            if len(key) >= 8:  # a real key, not a placeholder like EMPTY that could match any text
                what = what.replace(key, "***")
        if isinstance(err, openai.APITimeoutError):
            what = f"no answer within timeout_s = {self.timeout_s:g} s ({what})"
        elif isinstance(err, openai.APIConnectionError):
            what = f"could not connect ({what})"
        s = self.settings
        if not _retried(err):
            status = getattr(err, "status_code", None)
            fix = (
                "check the API key (its variable is named in the config)"
                if status in (401, 403)
                else "check the model name and the request's options"
            )
            hint = f"this refusal is not retried; {fix}"
        else:
            retries = f"{self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'}"
            hint = (
                f"{retries} with exponential backoff from {self.retry_delay_s:g} s "
                f"({s}retry_delay_s) did not help; check that the server at {self.url} is up and "
                f"serves model {self.model}, or raise {s}max_retries (now {self.max_retries})"
            )
            if isinstance(err, openai.APITimeoutError):
                hint += f" or, if it is only slow, {s}timeout_s (now {self.timeout_s:g})"
        return EndpointError(
            f"endpoint {self.url} {failed} (model {self.model}): {what}; {hint}",
            status_code=getattr(err, "status_code", None),
            retryable=_retried(err),
        )
