"""Mirror store artifacts in the Prefect UI (the store, not Prefect, holds the data)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from iro.core.store.local import Artifact
from iro.pipeline.evaluation import EvalRow, format_markdown, format_table

PREVIEW_ROWS = 20


def artifact_key(run_name: str, *parts: object) -> str:
    """Prefect keys allow lowercase letters, digits and dashes; same key = a new version."""
    raw = "-".join(str(p) for p in (run_name, *parts)).lower()
    return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in raw)


def _markdown_metrics(title: str, artifact: Artifact) -> str:
    lines = [
        f"### {title}",
        "",
        f"store artifact `{artifact.stage}/{artifact.id}` at `{artifact.path}`",
        "",
    ]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in artifact.metrics.items()
    ]
    return "\n".join(lines)


def publish_stage(
    run_name: str,
    key_parts: tuple,
    title: str,
    artifact: Artifact,
    table: pd.DataFrame | None = None,
) -> None:
    create_markdown_artifact(
        key=artifact_key(run_name, *key_parts, "summary"),
        markdown=_markdown_metrics(title, artifact),
        description=title,
    )
    if table is not None:
        shown = [c for c in table.columns if c != "prompt_text"]
        preview = table[shown].head(PREVIEW_ROWS).copy()
        for column in preview.select_dtypes(include="object"):
            preview[column] = preview[column].astype(str).str.slice(0, 200)
        create_table_artifact(
            key=artifact_key(run_name, *key_parts, "table"),
            table=preview.to_dict(orient="records"),
            description=f"{title}: first {len(preview)} of {len(table)} rows",
        )


def progress_reporter(run_name: str, *key_parts: object) -> Callable[[str, float], None]:
    """A callback for long stages that moves a Prefect progress artifact."""
    artifact_id = create_progress_artifact(
        progress=0.0, key=artifact_key(run_name, *key_parts, "progress"), description="progress"
    )

    def report(message: str, fraction: float) -> None:
        update_progress_artifact(
            artifact_id, progress=round(100 * min(max(fraction, 0.0), 1.0), 1), description=message
        )

    return report


def publish_evaluation(run_name: str, rows: list[EvalRow], reference_reward: float | None) -> None:
    """A run's held-out evaluation table as a Prefect artifact and in the flow's log."""
    if not rows:
        return
    create_markdown_artifact(
        key=artifact_key(run_name, "evaluation"),
        markdown=f"## Run {run_name}: held-out evaluation\n\n{format_markdown(rows)}",
        description="evaluation table",
    )
    get_run_logger().info(
        "evaluation on held-out prompts:\n%s", format_table(rows, reference_reward)
    )
