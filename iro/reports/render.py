"""The report as text: a markdown table and a bar chart of reward and win rate by method.

The chart is plain text in a code block so it renders the same in a terminal, a file and the
Prefect UI (which shows markdown but no plotting library).
"""

from __future__ import annotations

from collections.abc import Sequence

from iro.core.stats import interval, percent
from iro.reports.rows import ReportRow as Row

BAR_WIDTH = 30


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| method | report | metric | win rate | 95% CI | W/T/L | failures | prompts | judge | prompt | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.method} | {r.kind} | {r.metric} | {percent(r.win_rate)} | {interval(r)} | "
        f"{r.wins}/{r.ties}/{r.losses} | {r.failures} | {r.prompts} | {r.judge or '-'} | "
        f"{r.prompt_version or '-'} | {r.note} |"
        for r in rows
    ]
    return "\n".join(lines)


def _bar(value: float, scale: float) -> str:
    return "#" * round(BAR_WIDTH * value / scale) if scale > 0 else ""


def bar_chart(rows: Sequence[Row]) -> str:
    """Mean reward and reward win rate per method, in the run's order (iterations last)."""
    reward_rows = [r for r in rows if r.kind == "reward"] or list(rows)
    low = min(r.mean_reward for r in reward_rows)
    span = max(r.mean_reward for r in reward_rows) - low
    width = max(len(r.method) for r in reward_rows)
    lines = ["mean reward (bar: relative to the lowest)   win rate (bar: 0..100%)"]
    for r in reward_rows:
        reward_bar = _bar(r.mean_reward - low, span) if span > 0 else "#" * BAR_WIDTH
        rate_bar = _bar(r.win_rate or 0.0, 1.0)
        lines.append(
            f"{r.method:<{width}} {r.mean_reward:8.4f} {reward_bar:<{BAR_WIDTH}}  "
            f"{percent(r.win_rate):>6} {rate_bar}"
        )
    return "\n".join(lines)


def markdown_summary(run_name: str, baseline: str, rows: Sequence[Row]) -> str:
    if not rows:
        return f"## Run {run_name}: no report rows (every report kind is off)\n"
    return (
        f"## Run {run_name}: win rates against {baseline}\n\n"
        "Ties count half; failures (unparsable or failed judgements) are excluded from the rate "
        "and counted. Intervals are 95%: Wilson's score interval for reward and judge win rates, "
        "and for AlpacaEval ±1.96 × the standard error alpaca-eval reports.\n\n"
        f"{markdown_table(rows)}\n\n```\n{bar_chart(rows)}\n```\n"
    )
