"""A finished run's aligned policy, answering prompts: pi_base guided by the run's value models,
optionally composed with other runs' value models, each run with a strength chosen per request.

The CLI (`iro decode`) and the `iro-decode` flow both call `answer`; `iro api` keeps an
`AlignedPolicy` loaded and decodes each batch of requests with it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from iro.core.config import ConfigError, RunConfig, check_run_name, parse_config, set_dotted_key
from iro.core.cost import PER_PROMPT, measure, per_prompt
from iro.core.methods import get_method
from iro.core.store.protocol import Store
from iro.pipeline.decoder import decode
from iro.pipeline.generation import start_engine
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


@dataclass(frozen=True)
class AlignedPolicy:
    """A run's aligned policy as its records describe it, read once: the recorded config, and for
    each run composed (the run itself, then the `with_runs`), its value models and their betas.

    A server keeps one and derives each request's config and guide from it, without rereading
    the store."""

    run: str
    iteration: int
    config: Mapping[str, Any]
    guides: Mapping[str, tuple[list[Path], list[float]]]

    def run_config(self, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """The recorded config with `overrides` (dotted keys), validated."""
        data = copy.deepcopy(dict(self.config))
        for key, value in (overrides or {}).items():
            set_dotted_key(data, key, value)
        return parse_config(data, f"run {self.run}")

    def guide(self, strengths: Mapping[str, float] | None = None) -> tuple[list[Path], list[float]]:
        """The value models and betas of sum over runs of s * sum_i V_i / beta_i, with `strengths`
        mapping a run name to its s (default 1; `guidance.compose`)."""
        strengths = dict(strengths or {})
        unknown = sorted(set(strengths) - set(self.guides))
        if unknown:
            raise ConfigError(
                f"a strength is given for {unknown}, which guide nothing here; the runs composed: "
                f"{', '.join(self.guides)} (add one with --with RUN)"
            )
        return compose(
            [
                (dirs, betas, float(strengths.get(name, 1.0)))
                for name, (dirs, betas) in self.guides.items()
            ]
        )


def load_aligned_policy(
    store: Store, run: str, iteration: int | None = None, with_runs: Sequence[str] = ()
) -> AlignedPolicy:
    """`run`'s aligned policy at `iteration` (default: its latest), composed with `with_runs`
    ('RUN' or 'RUN@K': other runs' value models, say trained for another reward)."""
    summary = run_summary(store, run, iteration)
    summaries = {run: summary}
    for ref in with_runs:
        name, k = parse_run_ref(ref)
        summaries[name] = run_summary(store, name, k)
    guides = {
        name: (value_model_dirs(store, s), list(s["policy"]["betas"]))
        for name, s in summaries.items()
    }
    return AlignedPolicy(run, summary["iteration"], summary["config"], guides)


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
    the method and the iteration that answered, and what answering cost per prompt (the call's
    counters shared equally by its prompts; a search engine's start is not part of it, as a
    served policy keeps its engine).

    `with_runs` ('RUN' or 'RUN@K') adds other runs' value models, say one trained for another
    reward; `strengths` maps a run name to its strength s (default 1): the guide is
    sum over runs of s * sum_i V_i / beta_i (`guidance.compose`).
    """
    policy = load_aligned_policy(store, run, iteration, with_runs)
    cfg = policy.run_config(overrides)
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ConfigError("no prompt given")
    value_dirs, betas = policy.guide(strengths)
    frame = pd.DataFrame(
        {"id": [f"prompt-{i}" for i in range(len(prompts))], "prompt": prompts, "reference": None}
    )
    mode = mode or cfg.decode.mode
    if get_method(mode).runs_on == "search" and cfg.ray.workers <= 1:
        start_engine(cfg)  # Ray's actors start their own
    with measure() as cost:
        outputs = decode(cfg, frame, mode, value_dirs, cfg.seed, betas=betas)
    return outputs.assign(mode=mode, iteration=policy.iteration, **per_prompt(cost, len(prompts)))


def answer_records(outputs: pd.DataFrame) -> list[dict[str, Any]]:
    """`answer`'s outputs as JSON-ready records: what `iro decode` prints and `iro-decode` returns."""
    return [
        {
            "prompt": row.prompt,
            "response": row.response,
            "mode": row.mode,
            "iteration": int(row.iteration),
            "cost": {name: getattr(row, name) for name in PER_PROMPT},
        }
        for row in outputs.itertuples()
    ]
