"""The reward interface: a batch of (prompt, response) pairs in, one float per response out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

# what a reward model's forward passes may run in: its weights stay float32, and anything else
# is autocast (bf16 runs at a GPU's tensor-core rate, ~15x float32's on an H100)
SCORE_DTYPES = ("float32", "bfloat16", "float16")


class RewardError(ValueError):
    """A reward that cannot be used (NaN, infinite, wrong count: names the offending row; or an
    option it cannot take)."""


class Reward(ABC):
    name: str

    @abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each response to its prompt; `prompts` are the raw task inputs, not chat text."""


def checked_dtype(name: str, dtype: str) -> str:
    if dtype not in SCORE_DTYPES:
        raise RewardError(f"reward {name!r}: dtype must be one of {SCORE_DTYPES}, got {dtype!r}")
    return dtype


class ModelReward(Reward):
    """A reward read off a torch model on `device`: no gradients, and its forward autocast to
    `dtype` unless that is float32."""

    device: str
    dtype: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        device_type = torch.device(self.device).type
        precision = getattr(torch, self.dtype)
        autocast = torch.autocast(device_type, precision, enabled=self.dtype != "float32")
        with torch.no_grad(), autocast:
            return self._score(prompts, responses)

    @abstractmethod
    def _score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """`score`'s work, run under its no_grad and autocast."""


def check_scores(name: str, scores: np.ndarray, expected: int) -> np.ndarray:
    """Stop on a score array that would silently poison training."""
    try:
        scores = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RewardError(
            f"reward {name!r} returned {type(scores).__name__} that is not an array of numbers "
            f"({err}); a reward returns one float per response"
        ) from None
    if scores.shape != (expected,):
        raise RewardError(
            f"reward {name!r} returned shape {scores.shape}, expected ({expected},): a reward "
            f"returns exactly one score per response ({expected} responses were given)"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        row = int(bad[0])
        raise RewardError(
            f"reward {name!r} returned {scores[row]} for row {row} "
            f"({bad.size} non-finite score(s) in all); nothing was trained on it. Fix the reward "
            "or its options so that every response gets a finite score (an LLM judge gives NaN "
            "when an answer carries no rating or its request failed for good)"
        )
    return scores
