"""One interface for "continue these token prefixes by up to N tokens, n samples each".

Chunk-level search, best-of-N and plain sampling all reduce to this call, so every back end
(vLLM, transformers, an OpenAI-compatible endpoint) only has to implement it once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 50


@dataclass(frozen=True)
class ContinuationRequest:
    """Continue `prefix_ids` (prompt plus the response so far) by up to `max_tokens` tokens."""

    prefix_ids: tuple[int, ...]
    n: int
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class Continuation:
    """New tokens only, without the end-of-sequence token; `ended` says the model emitted it."""

    token_ids: tuple[int, ...]
    ended: bool


class Engine(ABC):
    """A frozen policy that samples continuations. Implementations batch the whole request list."""

    name: str
    eos_token_id: int

    @abstractmethod
    def continue_batch(
        self, requests: Sequence[ContinuationRequest], sampling: SamplingSettings
    ) -> list[list[Continuation]]:
        """Return, for each request, its `n` continuations in a seed-determined order."""

    def forget_prefixes(self) -> None:  # noqa: B027 - engines with a prefix cache override it
        """Drop every cached prefix, so that the next call computes what a first request would
        (a measured run then does not depend on what ran before it). Without a prefix cache in
        this process there is nothing to drop."""
