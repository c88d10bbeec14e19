"""The evaluation table of a run: base, best-of-U and each IRO iteration at the same U.

Win rates come from `iro.reports.stats.reward_win_rate` (ties half, Wilson's 95% interval), the
same function the reports and the benchmarks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from iro.base.store import Artifact
from iro.reports.stats import reward_win_rate


def evaluation_metrics(outputs: pd.DataFrame) -> dict[str, float]:
    """Mean reward, and the win rate against each prompt's reference (`reference_reward`)."""
    rate = reward_win_rate(outputs["reward"].to_numpy(), outputs["reference_reward"].to_numpy())
    return {
        "mean_reward": float(outputs["reward"].mean()),
        "win_rate": rate.win_rate,
        "win_rate_ci_low": rate.ci_low,
        "win_rate_ci_high": rate.ci_high,
        "mean_words": float(outputs["response"].str.split().str.len().mean()),
        "prompts": float(len(outputs)),
    }


@dataclass(frozen=True)
class EvalRow:
    method: str
    samples_per_prompt: int  # U
    mean_reward: float
    win_rate: float
    ci_low: float
    ci_high: float
    mean_words: float
    artifact: str


def eval_row(method: str, artifact: Artifact) -> EvalRow:
    m = artifact.metrics
    return EvalRow(
        method=method,
        samples_per_prompt=int(m["samples_per_prompt"]),
        mean_reward=m["mean_reward"],
        win_rate=m["win_rate"],
        ci_low=m["win_rate_ci_low"],
        ci_high=m["win_rate_ci_high"],
        mean_words=m["mean_words"],
        artifact=f"{artifact.stage}/{artifact.id}",
    )


def rows_as_dicts(rows: Sequence[EvalRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def _interval(r: EvalRow) -> str:
    return f"[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"


def format_table(rows: Sequence[EvalRow], reference_reward: float | None = None) -> str:
    header = (
        f"{'method':<14} {'U':>3} {'mean reward':>12} {'win rate vs ref':>16} "
        f"{'95% interval':>14} {'words':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.method:<14} {r.samples_per_prompt:>3} {r.mean_reward:>12.4f} "
            f"{100 * r.win_rate:>15.1f}% {_interval(r):>14} {r.mean_words:>6.1f}"
        )
    if reference_reward is not None:
        lines.append(f"(reference summaries: mean reward {reference_reward:.4f})")
    return "\n".join(lines)


def format_markdown(rows: Sequence[EvalRow]) -> str:
    lines = [
        "| method | U | mean reward | win rate vs reference | 95% interval (Wilson) | words |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.method} | {r.samples_per_prompt} | {r.mean_reward:.4f} | "
        f"{100 * r.win_rate:.1f}% | {_interval(r)} | {r.mean_words:.1f} |"
        for r in rows
    ]
    return "\n".join(lines)
