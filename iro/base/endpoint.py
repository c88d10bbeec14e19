"""One model behind an OpenAI-compatible endpoint, and the one error its requests fail with.

Retries are the `openai` client's own: connection errors, timeouts and 408/409/429/5xx answers
are retried up to `max_retries` times with exponential backoff (honouring `Retry-After`), each
attempt bounded by `timeout_s`; any other refusal (a wrong key, a bad request) is not retried. A
request that fails for good raises `EndpointError`, whose message names the endpoint URL, the
model, the attempts and the cause, never the API key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EndpointError(RuntimeError):
    """A request to an endpoint failed for good; `status_code` is the HTTP status, if one came."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Endpoint:
    """`model` served at `base_url` (None: the OpenAI API, or $OPENAI_BASE_URL)."""

    def __init__(
        self,
        *,
        base_url: str | None,
        model: str,
        api_key: str,
        max_retries: int,
        timeout_s: float,
    ) -> None:
        from openai import OpenAI

        self.model = model
        self._client = OpenAI(
            base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s
        )
        self.url = str(self._client.base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, model={self.model!r})"

    def complete(self, **request: Any) -> Any:
        """`completions.create` for this model."""
        return self._call(self._client.completions.create, request)

    def chat(self, **request: Any) -> Any:
        """`chat.completions.create` for this model."""
        return self._call(self._client.chat.completions.create, request)

    def _call(self, create: Callable[..., Any], request: dict[str, Any]) -> Any:
        import openai

        try:
            return create(model=self.model, **request)
        except openai.APIError as err:
            raise self._error(err) from None  # the client's error may quote the API key

    def _error(self, err: Exception) -> EndpointError:
        # the client stamps every attempt with the number of retries taken before it
        attempts = 1 + int(err.request.headers.get("x-stainless-retry-count", 0))
        failed = "failed" if attempts == 1 else f"failed {attempts} times"
        cause = f"{type(err).__name__}: {err}"
        if err.__cause__ is not None:  # e.g. the connection error under APIConnectionError
            cause += f" ({err.__cause__})"
        key = self._client.api_key
        if len(key) >= 8:  # a real key, not a placeholder like EMPTY that could match any text
            cause = cause.replace(key, "***")
        return EndpointError(
            f"endpoint {self.url} {failed} (model {self.model}): {cause}",
            status_code=getattr(err, "status_code", None),
        )
