"""The evaluation table of a run: base, best-of-U and each IRO iteration at the same U.

Win rates come from `iro.core.stats.reward_win_rate` (ties half, Wilson's 95% interval), the
same function the reports and the benchmarks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from iro.core.stats import interval, percent, reward_win_rate
from iro.core.store.local import Artifact


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


def format_table(rows: Sequence[EvalRow], reference_reward: float | None = None) -> str:
    """The table `iro run` prints: one line per method, win rates in percent with intervals."""
    table = pd.DataFrame(
        {
            "method": [r.method for r in rows],
            "U": [r.samples_per_prompt for r in rows],
            "mean reward": [f"{r.mean_reward:.4f}" for r in rows],
            "win rate vs ref": [percent(r.win_rate) for r in rows],
            "95% interval": [interval(r) for r in rows],
            "words": [f"{r.mean_words:.1f}" for r in rows],
        }
    )
    text = table.to_string(index=False)
    if reference_reward is not None:
        text += f"\n(reference summaries: mean reward {reference_reward:.4f})"
    return text


def format_markdown(rows: Sequence[EvalRow]) -> str:
    lines = [
        "| method | U | mean reward | win rate vs reference | 95% interval (Wilson) | words |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.method} | {r.samples_per_prompt} | {r.mean_reward:.4f} | "
        f"{percent(r.win_rate)} | {interval(r)} | {r.mean_words:.1f} |"
        for r in rows
    ]
    return "\n".join(lines)
