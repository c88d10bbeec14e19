"""An LLM judge as a reward: the model rates each response on a 1..10 scale (temperature 0).

An answer without a rating in range is recorded as NaN, so the stage stops naming the row
(`check_scores`) rather than training on an invented score. Requests that fail (the endpoint down,
slower than `timeout_s`, overloaded or answering garbage) are retried `max_retries` times with
exponential backoff from `retry_delay_s`; one that still fails stops the scoring with a
`RewardError` naming the row, the endpoint, what happened, the attempts and the option to change,
and no further request is sent once the endpoint itself has failed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from iro.reward.base import Reward, RewardError
from iro.reward.openai_client import ChatClient, resolve_api_key

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
        timeout_s: float = 120.0,
        retry_delay_s: float = 0.5,
    ):
        self.template = template
        self._settings = {
            "model": model,
            "base_url": base_url,
            "max_tokens": max_tokens,
            "max_retries": max_retries,
            "concurrency": concurrency,
            "timeout_s": timeout_s,
            "retry_delay_s": retry_delay_s,
            # the judge's options as a config writes them, for the error message
            "settings": "reward.components[llm_judge].options.",
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
        answers, error = self.client.complete_or_stop(requests)
        if error is not None:
            unanswered = [i for i, a in enumerate(answers) if a is None]
            raise RewardError(
                f"reward {self.name!r} returned nan for row {unanswered[0]}: {len(unanswered)} of "
                f"{len(requests)} judge request(s) got no answer, so nothing was scored or "
                f"trained on; {error}"
            ) from error
        return np.array([parse_rating(a) for a in answers])
