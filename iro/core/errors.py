"""Running out of memory: one error that names the stage and the settings that lower its memory.

An engine (vLLM, transformers) or the value trainer that runs out of GPU or CPU memory raises
`torch.OutOfMemoryError`, a `RuntimeError` saying "out of memory", vLLM's "No available memory for
the cache blocks" or `MemoryError`. `out_of_memory(stage, knobs)` turns any of these into
`OutOfMemory`, which is never retried: the same settings would run out again. The stage's
staging directory goes with it; artifacts finished before it stay in the store and are reused
once the settings are changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# What an engine says when it runs out; matched in lower case.
_MESSAGES = ("out of memory", "no available memory for the cache blocks")


class OutOfMemory(RuntimeError):
    """A stage ran out of memory; the message names the stage and the settings to turn."""


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # torch without the class (< 2.5): by message
        pass
    return isinstance(err, (RuntimeError, ValueError)) and any(
        m in str(err).lower() for m in _MESSAGES
    )


@contextmanager
def out_of_memory(stage: str, knobs: Mapping[str, tuple[Any, str]]) -> Iterator[None]:
    """Raise `OutOfMemory` naming `stage` and `knobs` ({setting: (its value, what to do)}) when
    the block runs out of memory; every other error passes unchanged."""
    try:
        yield
    except OutOfMemory:
        raise
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        turn = "; ".join(
            f"{key} (now {'null' if value is None else value}): {what}"
            for key, (value, what) in knobs.items()
        )
        raise OutOfMemory(
            f"{stage} ran out of memory ({type(err).__name__}: {first_line}). It is not retried: "
            f"the same settings would run out again. Lower its memory use with {turn}; then "
            "rerun: finished stages are reused"
        ) from err
