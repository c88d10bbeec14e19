"""One line of a win-rate report: a method against a baseline, by one kind of judge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportRow:
    method: str
    baseline: str
    kind: str  # reward | judge | alpaca_eval
    metric: str
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str  # wilson-95, or alpaca-eval's normal interval
    wins: int
    ties: int
    losses: int
    failures: int
    prompts: int
    mean_reward: float
    judge: str | None = None
    prompt_version: str | None = None
    note: str = ""
