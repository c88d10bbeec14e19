"""What `iro api` reads and how it refuses: the OpenAI request bodies, its `alignment` object,
and OpenAI-style errors.

Bodies check types only: the values go into the run's config, whose schema checks them and
names the setting (`iro.core.config`), as for `iro decode --set`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """A refused or failed request: an HTTP status and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Alignment(BaseModel):
    """How the aligned policy answers (`extra_body={"alignment": {...}}`); absent: the run's."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, not ignored

    method: str | None = Field(
        None, description="iro, specrej, bon, base, vas, args (iro/core/methods.py)"
    )
    beams: int | None = Field(None, description="w: beams kept at each step (search.beams)")
    children: int | None = Field(None, description="k: continuations per beam (search.children)")
    chunk_tokens: int | None = Field(None, description="l: tokens per step (search.chunk_tokens)")
    strengths: dict[str, float] | None = Field(
        None, description="run name -> strength s of its value models (default 1; 0 leaves it out)"
    )
    final_pick: str | None = Field(None, description="iro: reward or value (decode.final_pick)")


class SamplingRequest(BaseModel):
    """The fields completions and chat completions share."""

    model: str
    n: int = Field(1, ge=1, le=128, description="answers, each an independent decode")
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # as vLLM's servers take it; the project's openai engine sends it
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    stream: bool = False
    alignment: Alignment | None = None

    def new_tokens(self) -> int | None:
        return self.max_tokens

    def stop_strings(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


class CompletionRequest(SamplingRequest):
    """Raw text, no template; token ids are read as the text they decode to."""

    prompt: str | list[str] | list[int] | list[list[int]]


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # newer clients' name for max_tokens

    def new_tokens(self) -> int | None:
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens

    def as_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump() for m in self.messages]
