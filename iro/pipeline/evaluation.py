"""The evaluation table of a run: base, best-of-N and each IRO iteration at the same U."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from iro.base.store import Artifact


@dataclass(frozen=True)
class EvalRow:
    method: str
    samples_per_prompt: int
    mean_reward: float
    win_rate: float
    mean_words: float
    artifact: str


def eval_row(method: str, artifact: Artifact) -> EvalRow:
    m = artifact.metrics
    return EvalRow(
        method=method,
        samples_per_prompt=int(m["samples_per_prompt"]),
        mean_reward=m["mean_reward"],
        win_rate=m["win_rate"],
        mean_words=m["mean_words"],
        artifact=f"{artifact.stage}/{artifact.id}",
    )


def rows_as_dicts(rows: Sequence[EvalRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def format_table(rows: Sequence[EvalRow], reference_reward: float | None = None) -> str:
    header = f"{'method':<14} {'U':>3} {'mean reward':>12} {'win rate vs ref':>16} {'words':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.method:<14} {r.samples_per_prompt:>3} {r.mean_reward:>12.4f} "
            f"{100 * r.win_rate:>15.1f}% {r.mean_words:>6.1f}"
        )
    if reference_reward is not None:
        lines.append(f"(reference summaries: mean reward {reference_reward:.4f})")
    return "\n".join(lines)


def format_markdown(rows: Sequence[EvalRow]) -> str:
    lines = [
        "| method | U | mean reward | win rate vs reference | words |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.method} | {r.samples_per_prompt} | {r.mean_reward:.4f} | {100 * r.win_rate:.1f}% | {r.mean_words:.1f} |"
        for r in rows
    ]
    return "\n".join(lines)
