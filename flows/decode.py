"""The `iro-decode` flow: a finished run's aligned policy answering prompts, from the UI or
`prefect deployment run`, with other runs' value models composed in and a strength per run chosen
per request (the deployment form of `iro decode --with RUN --strength RUN=VALUE`).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import Field

from iro.core.config import RUN_NAME_PATTERN
from iro.core.store.remote import open_store
from iro.flows.params import (
    DEFAULT_CONFIG,
    ConfigPath,
    ExistingRun,
    Iteration,
    Overrides,
    run_config,
)
from iro.pipeline.aligned import answer, answer_records
from iro.tasks.publish import artifact_key

Prompts = Annotated[list[str], Field(min_length=1)]
# RUN or RUN@ITERATION (aligned.parse_run_ref)
RunRefs = list[
    Annotated[str, Field(pattern=RUN_NAME_PATTERN.removesuffix("$") + "(@[1-9][0-9]*)?$")]
]
Strengths = dict[str, Annotated[float, Field(ge=0)]] | None


@flow(name="iro-decode", flow_run_name="{run}-decode")
def iro_decode(
    run: ExistingRun,
    prompts: Prompts,
    config: ConfigPath = DEFAULT_CONFIG,
    mode: str | None = None,
    iteration: Iteration | None = None,
    with_runs: RunRefs | None = None,
    strengths: Strengths = None,
    overrides: Overrides = None,
) -> list[dict[str, Any]]:
    """Answer prompts with a run's aligned policy: pi_base guided by its value models.

    Args:
        run: the finished run whose value models guide decoding, e.g. demo.
        prompts: raw prompts, one per answer; the run's prompt template is applied.
        config: YAML run config; only its store section is read (which store holds the runs).
        mode: the method (iro, args, vas, ...; CBS is iro with search.implicit_reward); empty: the run config's decode.mode.
        iteration: use V_1..V_k of this iteration; empty: the latest finished one.
        with_runs: other runs' value models to add, as RUN or RUN@ITERATION, e.g. sentiment-vas.
        strengths: strength per run name (default 1; 0 leaves a run out), e.g. {"demo": 2}.
        overrides: dotted keys of the run's config to change for this request, e.g.
            {"sampling.max_new_tokens": 32}.
    """
    store = open_store(run_config(config, None, None).store)
    outputs = answer(store, run, prompts, mode, iteration, with_runs or (), strengths, overrides)
    rows = answer_records(outputs)
    create_table_artifact(
        key=artifact_key(run, "decode"),
        table=rows,
        description=f"answers of run {run}'s aligned policy (strengths {strengths or {}})",
    )
    get_run_logger().info("answered %d prompts with run %s", len(rows), run)
    return rows
