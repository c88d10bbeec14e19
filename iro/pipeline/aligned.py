"""A finished run's aligned policy, answering prompts: pi_base guided by the run's value models,
optionally composed with other runs' value models, each run with a strength chosen per request.

The CLI (`iro decode`) and the `iro-decode` flow both call `answer`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from iro.core.config import ConfigError, check_run_name, parse_config, set_dotted_key
from iro.core.store.protocol import Store
from iro.pipeline.decoder import decode
from iro.pipeline.guidance import compose


def run_summary(store: Store, run: str, iteration: int | None = None) -> dict[str, Any]:
    """The record of iteration `iteration` of `run` (default: its latest finished one)."""
    run_dir = store.run_dir(check_run_name(run))  # a published store fetches the run's records
    done = sorted(int(p.stem.split("-")[1]) for p in run_dir.glob("iteration-*.json"))
    if not done:
        raise ConfigError(f"run {run!r} has no finished iteration under {run_dir}")
    k = iteration or done[-1]
    if k not in done:
        raise ConfigError(f"run {run!r} has not finished iteration {k} (finished: {done})")
    return json.loads((run_dir / f"iteration-{k}.json").read_text())


def value_model_dirs(store: Store, summary: dict[str, Any]) -> list[Path]:
    """The value models a run summary names: where it recorded them, or else found through the
    store (a published store, s3://..., fetches what another machine trained)."""
    dirs = []
    for recorded in map(Path, summary["policy"]["value_models"]):
        if recorded.is_dir():
            dirs.append(recorded)
            continue
        stage, artifact_id = recorded.parent.parent.name, recorded.parent.name
        artifact = store.find(stage, artifact_id)
        if artifact is None:
            raise ConfigError(
                f"run {summary['run_name']!r} names value model {stage}/{artifact_id}, which the "
                f"store at {store.root} does not hold"
            )
        dirs.append(artifact.file(recorded.name))
    return dirs


def parse_run_ref(text: str) -> tuple[str, int | None]:
    """'RUN' or 'RUN@K' (iteration K's value models) -> (run, K or None)."""
    run, sep, k = text.partition("@")
    if sep and not k.isdigit():
        raise ConfigError(f"{text!r}: write RUN or RUN@ITERATION, e.g. sentiment-vas@1")
    return check_run_name(run), int(k) if sep else None


def answer(
    store: Store,
    run: str,
    prompts: Sequence[str],
    mode: str | None = None,
    iteration: int | None = None,
    with_runs: Sequence[str] = (),
    strengths: Mapping[str, float] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One response per prompt from `run`'s aligned policy (its config, plus `overrides`), with
    the method and the iteration that answered.

    `with_runs` ('RUN' or 'RUN@K') adds other runs' value models, say one trained for another
    reward; `strengths` maps a run name to its strength s (default 1): the guide is
    sum over runs of s * sum_i V_i / beta_i (`guidance.compose`).
    """
    summary = run_summary(store, run, iteration)
    data = summary["config"]
    for key, value in (overrides or {}).items():
        set_dotted_key(data, key, value)
    cfg = parse_config(data, f"run {run}")
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ConfigError("no prompt given")
    summaries = {run: summary}
    for ref in with_runs:
        name, k = parse_run_ref(ref)
        summaries[name] = run_summary(store, name, k)
    strengths = dict(strengths or {})
    unknown = sorted(set(strengths) - set(summaries))
    if unknown:
        raise ConfigError(
            f"a strength is given for {unknown}, which guide nothing here; the runs composed: "
            f"{', '.join(summaries)} (add one with --with RUN)"
        )
    value_dirs, betas = compose(
        [
            (
                value_model_dirs(store, s),
                s["policy"]["betas"],
                float(strengths.get(name, 1.0)),
            )
            for name, s in summaries.items()
        ]
    )
    frame = pd.DataFrame(
        {"id": [f"prompt-{i}" for i in range(len(prompts))], "prompt": prompts, "reference": None}
    )
    mode = mode or cfg.decode.mode
    outputs = decode(cfg, frame, mode, value_dirs, cfg.seed, betas=betas)
    return outputs.assign(mode=mode, iteration=summary["iteration"])


def answer_records(outputs: pd.DataFrame) -> list[dict[str, Any]]:
    """`answer`'s outputs as JSON-ready records: what `iro decode` prints and `iro-decode` returns."""
    return [
        {
            "prompt": row.prompt,
            "response": row.response,
            "mode": row.mode,
            "iteration": int(row.iteration),
        }
        for row in outputs.itertuples()
    ]
