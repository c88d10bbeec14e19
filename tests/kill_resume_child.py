"""The process tests/test_kill_resume.py kills: a whole tiny run (baselines, K iterations, the
evaluation table, the win-rate report), optionally held at a chosen point until SIGKILL arrives.

    python -m tests.kill_resume_child CONFIG [--cli] [--hold STAGE:N | checkpoint:N --ready FILE]

It drives the library the way the Prefect flows do (same stages, order, run lock and run
records) without Prefect, whose start-up would dominate these small runs; `--cli` runs the real
`iro run` instead. The hold needs no hook in production code: `ArtifactStore.create` (or the
value trainer's callbacks) is wrapped in this process only, so the N-th build of STAGE writes its
files into its staging directory, names that directory in `--ready` and then waits to be killed;
`checkpoint:N` waits right after the trainer's N-th checkpoint is saved, mid-training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from iro.core.config import load_config
from iro.core.store.local import ArtifactStore
from iro.pipeline.evaluation import eval_row, rows_as_dicts
from iro.pipeline.methods import method_label
from iro.pipeline.runner import Pipeline
from iro.reports.run import build_report
from iro.valuefn.training import ValueTrainer


def wait_to_be_killed(ready: Path, where: str) -> None:
    """Say where this process stopped (atomically: the test reads it at once), then wait."""
    partial = ready.with_name(ready.name + ".partial")
    partial.write_text(where)
    os.replace(partial, ready)
    while True:
        time.sleep(60)


def hold_in_build(stage: str, nth: int, ready: Path) -> None:
    """The nth build of `stage` in this process stops once its files are in its staging dir."""
    create = ArtifactStore.create
    builds = 0

    def held_create(self, stage_, version, config, parents, build, run_name=None):
        def held_build(out: Path) -> dict:
            nonlocal builds
            metrics = build(out)
            builds += stage_ == stage
            if stage_ == stage and builds == nth:
                wait_to_be_killed(ready, str(out))
            return metrics

        return create(self, stage_, version, config, parents, held_build, run_name)

    ArtifactStore.create = held_create


class HoldAfterSave(TrainerCallback):
    def __init__(self, nth: int, ready: Path):
        self.nth, self.ready, self.saves = nth, ready, 0

    def on_save(self, args, state, control, **kwargs):
        self.saves += 1
        if self.saves == self.nth:
            wait_to_be_killed(self.ready, f"{args.output_dir}/checkpoint-{state.global_step}")


def hold_after_checkpoint(nth: int, ready: Path) -> None:
    """The value trainer stops right after its nth checkpoint is saved."""
    init = ValueTrainer.__init__

    def held_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(HoldAfterSave(nth, ready))

    ValueTrainer.__init__ = held_init


def run(config: Path) -> None:
    """What `iro run` and then `iro report` do (flows/pipeline.py, iteration.py, report.py)."""
    cfg = load_config(config)
    pipeline = Pipeline(cfg)
    store = pipeline.store
    rows = []
    with store.run_lock(cfg.run_name):
        for method in cfg.eval.baselines:
            rows.append(eval_row(method_label(method, cfg), pipeline.evaluate(method, [])))
        values = []
        for k in range(1, cfg.iterations + 1):
            artifacts = pipeline.iteration(k, values)
            values.append(artifacts["value"])
            label = method_label("iro", cfg, k)
            rows.append(eval_row(label, pipeline.evaluate("iro", values)))
            summary = {a.stage: str(a.path) for a in artifacts.values()}
            store.record_run_step(cfg.run_name, f"iteration-{k}", {"artifacts": summary})
        store.record_run_step(cfg.run_name, "evaluation", {"evaluation": rows_as_dicts(rows)})
    build_report(store, cfg.run_name, cfg.report)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--hold", help="STAGE:N or checkpoint:N")
    parser.add_argument("--ready", type=Path, help="written when the hold point is reached")
    parser.add_argument("--cli", action="store_true", help="run `iro run CONFIG` (Prefect)")
    args = parser.parse_args()
    if args.hold:
        where, nth = args.hold.split(":")
        if where == "checkpoint":
            hold_after_checkpoint(int(nth), args.ready)
        else:
            hold_in_build(where, int(nth), args.ready)
    if args.cli:
        from iro.app.cli import main as iro

        sys.exit(iro(["run", str(args.config)]))
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    run(args.config)
    print("run finished", flush=True)


if __name__ == "__main__":
    main()
