"""What decoding costs, counted while it runs: seconds, policy and value tokens, reward calls.

A user choosing a method asks what each answer costs. Wall seconds answer it on this machine;
the token and call counts say where the seconds go and carry over to other hardware:

- `policy_tokens`: token positions the policy's forward passes computed: each prefix less what
  a prefix cache served, then every sampled token but a sequence's last (returned, never read
  back). On vLLM this is its scheduler's own count, which also covers recomputation.
- `sampled_tokens`: tokens the policy drew, an end-of-sequence token included.
- `value_tokens`: tokens the value models read (a prompt once per model, then only the response
  tokens each model has not read yet).
- `reward_calls`: responses, whole or partial, that a reward scored, the reward prior read on
  prefixes included.

Engines, the value ensemble and rewards add to every meter that `measure()` has open; outside
one, counting costs nothing. Meters live in this process: work sent to Ray actors or served by
an endpoint is not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from iro.core.engines.base import Continuation


@dataclass
class Cost:
    """What one measured block spent; the module's docstring defines each counter."""

    seconds: float = 0.0
    policy_tokens: int = 0
    sampled_tokens: int = 0
    value_tokens: int = 0
    reward_calls: int = 0


_ACTIVE: list[Cost] = []
_LOCK = threading.Lock()  # engines and rewards may report from worker threads


@contextmanager
def measure() -> Iterator[Cost]:
    """A meter over the block: everything counted while it is open, and its wall seconds.

    Meters nest: an inner block's counts add to the outer meters too.
    """
    cost = Cost()
    with _LOCK:
        _ACTIVE.append(cost)
    started = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - started
        with _LOCK:
            _ACTIVE.remove(cost)


PER_PROMPT = ("seconds", "policy_tokens", "sampled_tokens", "value_tokens", "reward_calls")


def per_prompt(cost: Cost, prompts: int) -> dict[str, float]:
    """Each counter of one measured call over `prompts` prompts, per prompt."""
    return {name: round(getattr(cost, name) / prompts, 4) for name in PER_PROMPT}


def _add(**counts: int) -> None:
    with _LOCK:
        for cost in _ACTIVE:
            for name, amount in counts.items():
                setattr(cost, name, getattr(cost, name) + amount)


def _sampled(continuation: Continuation) -> int:
    """A Continuation drops its end-of-sequence token, which was sampled all the same."""
    return len(continuation.token_ids) + continuation.ended


def count_sampling(
    prefix_lengths: Sequence[int],
    outputs: Sequence[Sequence[Continuation]],
    computed: int | None = None,
) -> None:
    """One engine call: request i had a prefix of `prefix_lengths[i]` tokens and `outputs[i]`.

    `computed`: the token positions the engine reports it ran (vLLM's scheduler). None: an
    engine without a prefix cache, which reads every sequence's whole prefix, then feeds back
    each sampled token but the last.
    """
    sampled = sum(_sampled(c) for continuations in outputs for c in continuations)
    if computed is None:
        computed = sum(
            prefix + _sampled(c) - 1
            for prefix, continuations in zip(prefix_lengths, outputs, strict=True)
            for c in continuations
        )
    _add(policy_tokens=computed, sampled_tokens=sampled)


def count_value_tokens(tokens: int) -> None:
    """Tokens one value model read in one forward pass (padding excluded)."""
    _add(value_tokens=tokens)


def count_reward_calls(responses: int) -> None:
    """Responses one reward call scored, whatever number of components it sums."""
    _add(reward_calls=responses)
