"""Pairwise LLM judge (DPO-paper prompts), both orders, temperature 0.

Each pair is judged with the method's output as A and again as B. Both orders agreeing gives a
win or a loss; disagreeing (position bias) gives a tie. An answer without a parsable verdict is
a failure, counted and reported, never replaced by a coin flip: a pair with a failed order has
no outcome.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from iro.reward.openai_client import ChatClient

SUMMARY_PROMPT = """Which of the following summaries does a better job of summarizing the most \
important points in the given forum post, without including unimportant or irrelevant details? \
A good summary is both precise and concise.

Post:
{prompt}

Summary A:
{a}

Summary B:
{b}

FIRST provide a one-sentence comparison of the two summaries, explaining which you prefer and \
why. SECOND, on a new line, state only "A" or "B" to indicate your choice. Your response should \
use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">"""

DIALOGUE_PROMPT = """For the following query to a chatbot, which response is more helpful?

Query: {prompt}

Response A:
{a}

Response B:
{b}

FIRST provide a one-sentence comparison of the two responses and explain which you feel is more \
helpful. SECOND, on a new line, state only "A" or "B" to indicate which response is more \
helpful. Your response should use the format:
Comparison: <one-sentence comparison and explanation>
More helpful: <"A" or "B">"""


@dataclass(frozen=True)
class JudgePrompt:
    kind: str
    template: str
    verdict_label: str

    @property
    def version(self) -> str:
        """Names the exact wording, so reports made with different prompts never mix."""
        digest = hashlib.sha256(self.template.encode()).hexdigest()[:8]
        return f"dpo-{self.kind}-{digest}"

    @property
    def answer_regex(self) -> str:
        """The answer format as a regex, for servers that can constrain decoding (vLLM)."""
        return rf"Comparison: [^\n]{{1,200}}\n{self.verdict_label}: [AB]"

    def render(self, prompt: str, a: str, b: str) -> str:
        return self.template.format(prompt=prompt, a=a, b=b)


PROMPTS = {
    "summary": JudgePrompt("summary", SUMMARY_PROMPT, "Preferred"),
    "dialogue": JudgePrompt("dialogue", DIALOGUE_PROMPT, "More helpful"),
}


def parse_verdict(answer: str | None, label: str) -> str | None:
    """'A' or 'B' from the `<label>: X` line(s); None if absent or contradictory."""
    if not answer:
        return None
    pattern = rf"^[\s*#]*{re.escape(label)}[\s*]*:[\s*\"'(]*([AB])\b"
    letters = {m.upper() for m in re.findall(pattern, answer, flags=re.IGNORECASE | re.MULTILINE)}
    return letters.pop() if len(letters) == 1 else None


def pair_outcome(method_as_a: str | None, method_as_b: str | None) -> int | None:
    """+1 / -1 when both orders agree, 0 when they disagree, None when either failed."""
    if method_as_a is None or method_as_b is None:
        return None
    first = 1 if method_as_a == "A" else -1
    second = 1 if method_as_b == "B" else -1
    return first if first == second else 0


@dataclass(frozen=True)
class Judgement:
    answer_method_first: str | None
    answer_method_second: str | None
    verdict_method_first: str | None
    verdict_method_second: str | None
    outcome: int | None


def judge_pairs(
    client: ChatClient,
    prompt: JudgePrompt,
    prompts: Sequence[str],
    method: Sequence[str],
    baseline: Sequence[str],
) -> list[Judgement]:
    """Judge every (method, baseline) pair in both orders; one request per order."""
    if not len(prompts) == len(method) == len(baseline):
        raise ValueError("prompts, method and baseline outputs must have the same length")
    requests = []
    for x, m, b in zip(prompts, method, baseline, strict=True):
        requests.append([{"role": "user", "content": prompt.render(x, m, b)}])
        requests.append([{"role": "user", "content": prompt.render(x, b, m)}])
    answers = client.complete_many(requests)
    judgements = []
    for first, second in zip(answers[0::2], answers[1::2], strict=True):
        v1 = parse_verdict(first, prompt.verdict_label)
        v2 = parse_verdict(second, prompt.verdict_label)
        judgements.append(Judgement(first, second, v1, v2, pair_outcome(v1, v2)))
    return judgements
