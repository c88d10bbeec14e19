"""The `iro` command.

iro run configs/demo.yaml [--set search.beams=4 ...]   the whole pipeline, in-process
iro iteration configs/demo.yaml --iteration 2            one iteration (needs 1..k-1 done)
iro check configs/demo.yaml                              validate a config, print it resolved
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from iro.config import ConfigError, load_config, parse_override

LIBRARY_LOGGERS = "iro,valuefn,reward,tasks,flows"


def _overrides(pairs: list[str]) -> dict[str, Any]:
    return dict(parse_override(p) for p in pairs)


def _prepare_environment() -> None:
    # Library modules log through the standard `logging`; Prefect forwards these loggers to the
    # console and, when a server is used, to the UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", LIBRARY_LOGGERS)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _overrides(args.set))
    print(json.dumps(cfg.model_dump(), indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    load_config(args.config, _overrides(args.set))  # fail fast, before Prefect starts
    _prepare_environment()
    from flows.pipeline import iro_pipeline
    from iro.report import EvalRow, format_table

    result = iro_pipeline(config=args.config, overrides=_overrides(args.set))
    rows = [EvalRow(**row) for row in result["evaluation"]]
    if rows:
        print("\nHeld-out evaluation (win rate = reward above the reference summary's):")
        print(format_table(rows))
    print(f"\nevaluation table: {result['report_path']}")
    return 0


def _cmd_iteration(args: argparse.Namespace) -> int:
    load_config(args.config, _overrides(args.set))
    _prepare_environment()
    from flows.iteration import iro_iteration

    summary = iro_iteration(
        config=args.config, iteration=args.iteration, overrides=_overrides(args.set)
    )
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iro", description="Align a frozen LLM with IRO.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("config", help="YAML run config, e.g. configs/demo.yaml")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="override a config key, e.g. --set search.beams=4 (repeatable)",
        )  # fmt: skip
        return p

    with_config(sub.add_parser("run", help="run every iteration and the evaluation")).set_defaults(
        func=_cmd_run
    )
    p_iter = with_config(sub.add_parser("iteration", help="run one iteration"))
    p_iter.add_argument("--iteration", type=int, required=True)
    p_iter.set_defaults(func=_cmd_iteration)
    with_config(sub.add_parser("check", help="validate a config")).set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
