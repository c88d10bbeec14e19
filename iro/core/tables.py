"""The candidate table: one row per response to a prompt, as generation and every decoder write
it and scoring, reweighting and value training read it.

`prompt` is always the raw task input (what a reward reads); `prompt_text` is what the policy
read, the prompt rendered by the data's chat template. Scoring adds `reward` and one
`reward_<component>` column per reward term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

CANDIDATE_COLUMNS = {
    "prompt_id": "the prompt's id in its dataset",
    "prompt": "the raw task input, what a reward reads",
    "reference": "the dataset's reference response (the win-rate baseline), or None",
    "prompt_text": "what the policy read: the prompt rendered by the chat template",
    "candidate": "the response's place in its prompt's pool, best by the search's score first",
    "response": "the response's text",
    "num_tokens": "the response's length in policy tokens",
    "ended": "whether the policy ended it (end-of-sequence) rather than the length limit",
    "value_score": "the search's score, sum_i V_i / beta_i (0 unscored, NaN for token-level)",
}


class Response(Protocol):
    """What a decoder returns for one response (the chunk search's `Candidate` is one)."""

    text: str
    response_ids: Sequence[int]
    ended: bool
    score: float


def candidate_table(
    prompts: pd.DataFrame, prompt_texts: Sequence[str], pools: Sequence[Sequence[Response]]
) -> pd.DataFrame:
    """The table of `pools[p]`, the responses to prompt p of `prompts` (id, prompt, reference
    columns), which the policy read as `prompt_texts[p]`."""
    rows = [
        {
            "prompt_id": prompts["id"].iloc[p],
            "prompt": prompts["prompt"].iloc[p],
            "reference": prompts["reference"].iloc[p],
            "prompt_text": prompt_texts[p],
            "candidate": c,
            "response": response.text,
            "num_tokens": len(response.response_ids),
            "ended": response.ended,
            "value_score": response.score,
        }
        for p, pool in enumerate(pools)
        for c, response in enumerate(pool)
    ]
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
