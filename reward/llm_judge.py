"""An LLM judge as a reward: the model rates each response on a 1..10 scale (temperature 0).

An answer without a rating in range is recorded as NaN, so the stage stops naming the row
(`check_scores`) rather than training on an invented score; request failures are retried with
backoff and counted by the client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from reward.base import Reward
from reward.openai_client import ChatClient, resolve_api_key

DEFAULT_TEMPLATE = (
    "Rate how well the response answers the task, from 1 (useless) to 10 (excellent).\n\n"
    "Task:\n{prompt}\n\nResponse:\n{response}\n\nAnswer with the number only."
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_rating(answer: str | None, low: float = 1.0, high: float = 10.0) -> float:
    """The first number in the answer if it lies in [low, high], else NaN."""
    match = _NUMBER.search(answer or "")
    if match is None:
        return float("nan")
    value = float(match.group())
    return value if low <= value <= high else float("nan")


class LLMJudgeReward(Reward):
    name = "llm_judge"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        template: str = DEFAULT_TEMPLATE,
        max_tokens: int = 8,
        max_retries: int = 3,
        concurrency: int = 4,
    ):
        self.template = template
        self._settings = {
            "model": model,
            "base_url": base_url,
            "max_tokens": max_tokens,
            "max_retries": max_retries,
            "concurrency": concurrency,
        }
        self._api_key = resolve_api_key(api_key_env)  # fail now, before any scoring

    @cached_property
    def client(self) -> ChatClient:
        return ChatClient(api_key=self._api_key, temperature=0.0, **self._settings)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        requests = [
            [{"role": "user", "content": self.template.format(prompt=p, response=r)}]
            for p, r in zip(prompts, responses, strict=True)
        ]
        return np.array([parse_rating(a) for a in self.client.complete_many(requests)])
