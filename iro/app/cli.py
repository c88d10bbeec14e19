"""The `iro` command.

iro run configs/demo.yaml [--set search.beams=4 ...]   the whole pipeline, in-process
iro vas configs/demo.yaml                                the same stages with VAS's settings
iro ivl configs/demo.yaml                                IVL: a residual learned from demonstrations
iro iteration configs/demo.yaml --iteration 2            one iteration (needs 1..k-1 done)
iro check configs/demo.yaml                              validate a config, print it resolved
iro decode --run RUN --prompt "..." [--mode METHOD]       answer prompts with the aligned policy
iro api --run RUN[@K] [--with RUN[@K]] [--port 8000]      serve aligned policies, OpenAI-style
iro report [--run RUN] [--config configs/demo.yaml]      win-rate report (default: latest run)
iro server start / iro serve                             operate through a Prefect server
iro store verify|quarantine STAGE/ID|gc [--dry-run]     check, set aside, clean the artifact store
                                                         (gc of a URL root: --min-age HOURS)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from iro import __version__
from iro.app import server
from iro.app.environment import prepare_environment
from iro.app.plan_text import format_plan
from iro.core.compat import IncompatibleValueModelError
from iro.core.config import (
    ConfigError,
    RunConfig,
    check_run_name,
    load_config,
    parse_override,
)
from iro.core.data import DatasetError
from iro.core.endpoint import EndpointError
from iro.core.errors import OutOfMemory
from iro.core.methods import METHODS
from iro.core.models import ModelNotFoundError
from iro.core.store.local import ArtifactError
from iro.core.store.protocol import Store
from iro.core.store.remote import GC_MIN_AGE_HOURS, RemoteArtifactStore, open_store
from iro.pipeline.plan import GPUS, build_plan
from iro.reports.run import ReportError
from iro.reward.base import RewardError
from iro.reward.openai_client import MissingAPIKeyError

# Exit codes, so that a scheduler can tell "fix the input" from "try again later":
EXIT_INPUT = 2  # the command, the config or what they name (argparse's code for usage errors)
EXIT_TEMPFAIL = 75  # sysexits' EX_TEMPFAIL: an endpoint was down, slow or overloaded

# Problems with the user's inputs: reported in one line, without a traceback.
USER_ERRORS = (ConfigError, DatasetError, ModelNotFoundError, ArtifactError, RewardError)
USER_ERRORS += (ReportError, MissingAPIKeyError, EndpointError, IncompatibleValueModelError)
USER_ERRORS += (OutOfMemory,)  # names the stage and the settings that lower its memory use


def _overrides(pairs: list[str]) -> dict[str, Any]:
    return dict(parse_override(p) for p in pairs)


def _check_run(cfg: RunConfig, iterations: int, evaluate: bool) -> None:
    """The checks a run makes before its first stage (models, prompts, trainer settings), after
    the environment is set: they import the libraries, which read it at import."""
    prepare_environment()
    from iro.pipeline.preflight import check_run

    check_run(cfg, iterations, evaluate)


def _cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _overrides(args.set))
    if args.plan:  # sizes, memory and hours from the config alone: nothing is loaded or fetched
        print(format_plan(build_plan(cfg, args.config, args.gpu)))
        return 0
    _check_run(cfg, cfg.iterations, cfg.eval.enabled)  # as a run would
    print(json.dumps(cfg.model_dump(), indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """`iro run` (IRO), `iro vas` (VAS's settings on the same stages), `iro ivl` (IVL's residual
    from demonstrations): the whole pipeline of the method, with its evaluation. The config is
    parsed and checked here, once; the flow receives it validated."""
    from iro.pipeline.methods import method_run_config

    cfg = method_run_config(args.config, None, _overrides(args.set), args.command)
    _check_run(cfg, 0 if args.command == "ivl" else cfg.iterations, cfg.eval.enabled)
    server.check_api_from_environment()
    from iro.flows.ivl import run_ivl
    from iro.flows.pipeline import run_pipeline
    from iro.pipeline.evaluation import EvalRow, format_table

    result = (run_ivl if args.command == "ivl" else run_pipeline)(cfg)
    rows = [EvalRow(**row) for row in result["evaluation"]]
    if rows:
        print("\nHeld-out evaluation (win rate = reward above the reference summary's):")
        print(format_table(rows))
    print(f"\nevaluation table: {result['report_path']}")
    return 0


def _cmd_iteration(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _overrides(args.set))
    _check_run(cfg, args.iteration, False)
    server.check_api_from_environment()
    from iro.flows.iteration import run_iteration

    summary = run_iteration(cfg, args.iteration)
    print(json.dumps(summary, indent=2))
    return 0


def _strengths(pairs: list[str]) -> dict[str, float]:
    """--strength NAME=VALUE pairs -> {run name: strength}."""
    strengths = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            strengths[check_run_name(name)] = float(value)
        except ValueError:
            raise ConfigError(
                f"--strength {pair!r}: write RUN=NUMBER, e.g. sentiment-vas=2"
            ) from None
        if not sep:
            raise ConfigError(f"--strength {pair!r}: write RUN=NUMBER, e.g. sentiment-vas=2")
    return strengths


def _read_prompts(args: argparse.Namespace) -> list[str]:
    """--prompts-file: one prompt per line, or one JSON object with a 'prompt' per line."""
    source = args.prompts_file
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--prompts-file {source}: cannot read it ({err})") from None
    if not (args.jsonl or source.lower().endswith(".jsonl")):
        return text.splitlines()
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--prompts-file {source}, line {number}: not JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ConfigError(
                f"--prompts-file {source}, line {number}: expected an object with a 'prompt' "
                'string, e.g. {"prompt": "Summarize ..."}'
            )
        prompts.append(record["prompt"])
    return prompts


def _cmd_decode(args: argparse.Namespace) -> int:
    """Answer prompts with the aligned policy of a run: pi_base guided by its value models."""
    prepare_environment()
    from iro.pipeline.aligned import answer, answer_records

    if args.jsonl and args.prompt is not None:
        raise ConfigError("--jsonl describes --prompts-file; with --prompt, leave it out")
    prompts = [args.prompt] if args.prompt is not None else _read_prompts(args)
    outputs = answer(
        open_store(args.store),
        args.run,
        prompts,
        args.mode,
        args.iteration,
        args.with_runs,
        _strengths(args.strength),
        _overrides(args.set),
    )
    for record in answer_records(outputs):
        print(json.dumps(record))
    return 0


def _cmd_api(args: argparse.Namespace) -> int:
    """Serve runs' aligned policies behind an OpenAI-compatible HTTP API until interrupted."""
    prepare_environment()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from iro.app.api import serve

    store = open_store(load_config(args.config).store if args.config else args.store)
    serve(
        store, args.run, args.with_runs, _overrides(args.set), args.host, args.port,
        args.api_key_env,
    )  # fmt: skip
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    if args.config:
        load_config(args.config, _overrides(args.set))
    if args.run is not None:
        check_run_name(args.run)
    server.check_api_from_environment()
    prepare_environment()
    from iro.flows.report import winrate_report

    result = winrate_report(run=args.run, config=args.config, overrides=_overrides(args.set))
    print(Path(result["artifact"], "summary.md").read_text())
    print(f"report artifact: {result['artifact']}")
    return 0


def _store(args: argparse.Namespace) -> Store:
    return open_store(load_config(args.config).store if args.config else args.root)


def _cmd_store_verify(args: argparse.Namespace) -> int:
    checks = _store(args).verify()
    for check in checks:
        print(f"{'ok' if check.problem is None else 'CORRUPT':8} {check.ref}", end="")
        print(f"  {check.problem}" if check.problem else "")
    bad = [check.ref for check in checks if check.problem]
    print(f"{len(checks)} artifacts: {len(checks) - len(bad)} ok, {len(bad)} corrupt")
    if bad:
        print(f"set them aside (the next run rebuilds them): iro store quarantine {' '.join(bad)}")
    return 1 if bad else 0


def _cmd_store_quarantine(args: argparse.Namespace) -> int:
    store = _store(args)
    for ref in args.artifacts:
        destination, problem = store.quarantine(ref)
        print(f"set aside {ref} ({problem or 'it verified'}) in {destination}")
    print("the next run rebuilds it" if len(args.artifacts) == 1 else "the next run rebuilds them")
    return 0


def _cmd_store_gc(args: argparse.Namespace) -> int:
    store = _store(args)
    if isinstance(store, RemoteArtifactStore):
        min_age = GC_MIN_AGE_HOURS if args.min_age is None else args.min_age
        report = store.gc(dry_run=args.dry_run, min_age_hours=min_age)
    elif args.min_age is not None:
        raise ArtifactError(
            "--min-age applies to a URL root only; on a local root gc holds every run's "
            "lock instead, so nothing a run is building can be taken for garbage"
        )
    else:
        report = store.gc(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in [*report.artifacts, *report.staging, *report.work]:
        print(f"{verb} {path}")
    print(
        f"{verb} {len(report.artifacts)} unreferenced artifacts, {len(report.staging)} "
        f"abandoned staging directories and {len(report.work)} stale work directories "
        f"({report.bytes / 1e6:.1f} MB); kept {report.kept} artifacts referenced by "
        f"{report.runs} runs"
        + (f", and {report.recent} too recent to tell" if report.recent else "")
    )
    return 0


def _add_store_commands(sub: argparse._SubParsersAction) -> None:
    p_store = sub.add_parser("store", help="verify, set aside and clean the artifact store")
    store_sub = p_store.add_subparsers(dest="store_command", required=True)

    def with_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--config", help="YAML run config whose store.root to use")
        where.add_argument("--root", default=".iro/store", help="store root (default .iro/store)")
        return p

    p_verify = with_root(store_sub.add_parser("verify", help="check every artifact's files"))
    p_verify.set_defaults(func=_cmd_store_verify)
    p_quarantine = with_root(
        store_sub.add_parser("quarantine", help="set artifacts aside so the next run rebuilds them")
    )
    p_quarantine.add_argument("artifacts", nargs="+", metavar="STAGE/ID")
    p_quarantine.set_defaults(func=_cmd_store_quarantine)
    p_gc = with_root(store_sub.add_parser("gc", help="remove artifacts that no run references"))
    p_gc.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    p_gc.add_argument(
        "--min-age",
        type=float,
        metavar="HOURS",
        help="URL roots: keep anything written more recently (a run on another machine may not "
        f"have recorded it yet; default {GC_MIN_AGE_HOURS:g})",
    )
    p_gc.set_defaults(func=_cmd_store_gc)


def _add_api_command(sub: argparse._SubParsersAction) -> None:
    p_api = sub.add_parser(
        "api", help="serve runs' aligned policies behind an OpenAI-compatible HTTP API"
    )
    p_api.add_argument(
        "--run", action="append", required=True, metavar="RUN[@K]",
        help="serve this run's aligned policy as model RUN@K (default K: its latest iteration) "
        "and its base policy as RUN@0 (repeatable)",
    )  # fmt: skip
    p_api.add_argument(
        "--with", dest="with_runs", action="append", default=[], metavar="RUN[@K]",
        help="also guide by this run's value models (strengths per request: alignment.strengths)",
    )  # fmt: skip
    where = p_api.add_mutually_exclusive_group()
    where.add_argument(
        "--store", default=".iro/store", help="artifact store root: a directory or an s3:// URL"
    )
    where.add_argument("--config", help="YAML run config whose store.root to use")
    p_api.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key of every run served, e.g. --set policy.engine=hf",
    )  # fmt: skip
    p_api.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p_api.add_argument("--port", type=int, default=8000)
    p_api.add_argument(
        "--api-key-env", metavar="VAR",
        help="require Authorization: Bearer <the value of this environment variable>",
    )  # fmt: skip
    p_api.set_defaults(func=_cmd_api)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iro", description="Align a frozen LLM with IRO.")
    parser.add_argument("--version", action="version", version=f"iro {__version__}")
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
    vas_help = "VAS: one TD(lambda) value model on samples of pi_base, token-level decoding"
    with_config(sub.add_parser("vas", help=vas_help)).set_defaults(func=_cmd_run)
    ivl_help = "IVL: a residual value network on the base's logits, learned from demonstrations"
    with_config(sub.add_parser("ivl", help=ivl_help)).set_defaults(func=_cmd_run)
    p_iter = with_config(sub.add_parser("iteration", help="run one iteration"))
    p_iter.add_argument("--iteration", type=int, required=True)
    p_iter.set_defaults(func=_cmd_iteration)
    p_check = with_config(sub.add_parser("check", help="validate a config"))
    p_check.add_argument(
        "--plan", action="store_true", help="print the models, GPU memory, tokens and hours a "
        "run needs, without downloading anything (docs/scaling.md)",
    )  # fmt: skip
    p_check.add_argument("--gpu", default="h100", choices=list(GPUS))
    p_check.set_defaults(func=_cmd_check)

    p_decode = sub.add_parser("decode", help="answer prompts with a run's aligned policy")
    p_decode.add_argument("--run", required=True, help="run name (config run_name)")
    p_decode.add_argument(
        "--store", default=".iro/store", help="artifact store root: a directory or an s3:// URL"
    )
    p_decode.add_argument(
        "--iteration", type=int, help="use V_1..V_k of this iteration (default: latest)"
    )
    p_decode.add_argument(
        "--mode",
        choices=list(METHODS),
        help="the method (default: config decode.mode)",
    )
    given = p_decode.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="one raw prompt (the prompt template is applied)")
    given.add_argument(
        "--prompts-file", metavar="PATH",
        help="raw prompts, one per line; '-' reads them from standard input; a .jsonl file (or "
        "--jsonl) holds one JSON object per line with a 'prompt' field, for multi-line prompts",
    )  # fmt: skip
    p_decode.add_argument(
        "--jsonl", action="store_true", help="read --prompts-file as JSON lines (with '-': stdin)"
    )
    p_decode.add_argument(
        "--with",
        dest="with_runs",
        action="append",
        default=[],
        metavar="RUN[@K]",
        help="also guide by this run's value models (say, trained for another reward)",
    )
    p_decode.add_argument(
        "--strength",
        "--beta",
        dest="strength",
        action="append",
        default=[],
        metavar="RUN=VALUE",
        help="strength s of a run's value models in the guide s * sum_i V_i / beta_i (default 1; "
        "0 leaves them out); --beta is the same option",
    )
    p_decode.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p_decode.set_defaults(func=_cmd_decode)
    _add_api_command(sub)
    p_report = sub.add_parser("report", help="win-rate report of a run (default: the latest)")
    p_report.add_argument("--run", default=None, help="run name; default: the latest run")
    p_report.add_argument("--config", default=None, help="YAML config with a report section")
    p_report.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p_report.set_defaults(func=_cmd_report)
    server.add_commands(sub)  # iro server start, iro serve
    _add_store_commands(sub)  # iro store verify | quarantine | gc
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # unwind normally: Prefect's temporary server is shut down with us, and the stage being built
    # removes its staging directory (a finished artifact is never touched)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except Exception as err:
        from iro.pipeline.runner import MissingArtifactError

        if isinstance(err, MissingArtifactError):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_INPUT
        raise


def exit_code(err: BaseException | None) -> int:
    """EXIT_TEMPFAIL where an endpoint failed the way retries are for (down, slow, overloaded),
    itself or as the cause of the error; EXIT_INPUT for every other reported problem."""
    while err is not None:
        if isinstance(err, EndpointError) and err.retryable:
            return EXIT_TEMPFAIL
        err = err.__cause__
    return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
