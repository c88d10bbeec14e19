"""The value-training row, shared by what builds rows (`valuefn.targets`, `valuefn.td`) and what
reads them (`valuefn.training`).

One row is a prompt (`prompt_text`, as the policy read it) and the candidate responses that continue it, each with the target it
regresses to and its loss weight (lists of equal length). Packing a prompt's candidates into one
row lets the trainer read the prompt once for all of them.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("prompt_text", "responses", "ended", "targets", "weights")
# Optional, per response: the states t (response tokens read) where a prior is known, and its
# values there. Without them (or with empty lists) every state regresses to the target.
PRIOR_COLUMNS = ("prior_states", "prior_values")
# Optional, per response: its own target at every state t = 0..T (T = its tokens, EOS included),
# regressed to instead of `targets` (which stays the response's reward). Not with a prior.
STATE_TARGETS = "state_targets"


def per_response(row: dict[str, Any], column: str) -> list[list[Any]]:
    """An optional per-response column of `row`, an empty list per response where it is absent."""
    return row.get(column) or [[] for _ in row["responses"]]
