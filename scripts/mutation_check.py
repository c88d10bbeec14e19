"""Mutation check: break each guarantee on purpose and see that its tests notice.

The guarantees in docs/reliability.md (its "Guarantees" table and the rest) each name the tests
that fail when the guarantee is removed. This script checks that claim: for every break in
BREAKS below it copies the working tree into a temporary directory, applies one small,
realistic change that a careless edit could make (a check skipped, an error not translated, a
setting misnamed), runs the tests that guard that guarantee in the copy, and reports whether
they caught it. A break the tests let through is a guarantee that nothing protects.

    .venv/bin/python scripts/mutation_check.py                  # every break except slow ones
    .venv/bin/python scripts/mutation_check.py --baseline       # first run each selection unbroken
    .venv/bin/python scripts/mutation_check.py --only gc-ignores-parents oom-not-translated
    .venv/bin/python scripts/mutation_check.py --list           # the breaks, and whether they apply
    .venv/bin/python scripts/mutation_check.py --include-slow   # also the breaks marked slow
    .venv/bin/python scripts/mutation_check.py --keep           # keep the copies for inspection

Results: "caught" (pytest exit code 1: a test failed), "NOT CAUGHT" (exit code 0: every test
passed on broken code), "error" (anything else: the tests could not be collected or run, they
timed out, they skipped everything, or with --baseline they already fail unbroken), "skipped"
(a slow break without --include-slow). The script exits 1 when any break is not caught or
errored, 0 otherwise.

Each break is data: the file, an exact `old` snippet and its `new` replacement. `old` must occur
exactly once in the file; when it does not, the code has moved and the break is refused until
its entry below is updated. To add a break, append a `Break` to BREAKS and run it with --only
and --baseline: it must be caught, and its tests must pass unbroken.

The copy holds the files git knows of (tracked, and untracked but not ignored), plus links
`iro/reward -> ../reward` and the like, so that `python -m pytest` run inside it imports the
copy's `iro` package rather than the editable install's (whose finder comes after sys.path).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# top-level folders installed as subpackages of `iro` (pyproject.toml's package-dir)
SUBPACKAGES = ("reward", "valuefn", "tasks", "flows")
PYTEST_OPTIONS = ["-x", "-q", "-p", "no:cacheprovider"]
OUTPUT_TAIL_LINES = 30


@dataclass(frozen=True)
class Break:
    """One deliberate break of one guarantee, and the tests that must catch it."""

    name: str
    removes: str  # the guarantee the break removes, in one line
    file: str  # relative to the repository root
    old: str  # must occur exactly once in `file`
    new: str
    tests: str  # pytest arguments: node ids, or `path -k expression`
    slow: bool = False  # skipped unless --include-slow
    timeout_s: int = 600


BREAKS: list[Break] = [
    Break(
        name="resume-starts-over",
        removes="value training killed mid-epoch resumes from its last checkpoint",
        file="valuefn/training.py",
        old="trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)",
        new="trainer.train(resume_from_checkpoint=None)",
        tests="tests/test_kill_resume.py -k mid_epoch",
        timeout_s=900,
    ),
    Break(
        name="read-only-store",
        removes="a read-only store's error names the directory that cannot be written",
        file="iro/core/store/local.py",
        old='f"cannot write to the artifact store at {target.parent} ({err}); make it "',
        new='f"cannot write to the artifact store at {self.root} ({err}); make it "',
        tests=(
            "tests/test_store_faults.py::"
            "test_a_read_only_store_gives_a_clear_error_and_keeps_earlier_artifacts"
        ),
    ),
    Break(
        name="prompt-length-after-engine",
        removes="a prompt longer than the context is refused before the engine starts",
        file="iro/pipeline/generation.py",
        old=(
            "    prompt_texts, prompt_ids = render(cfg, tokenizer, prompts, settings)\n"
            "    engine = start_engine(cfg)\n"
        ),
        new=(
            "    engine = start_engine(cfg)\n"
            "    prompt_texts, prompt_ids = render(cfg, tokenizer, prompts, settings)\n"
        ),
        tests=(
            "tests/test_bad_input.py::"
            "test_a_prompt_longer_than_the_context_is_refused_before_the_engine_starts"
        ),
    ),
    Break(
        name="retry-setting-misnamed",
        removes="an endpoint's failure names settings that the config has",
        file="iro/core/endpoint.py",
        old="({s}retry_delay_s) did not help",
        new="({s}retry_delay) did not help",
        tests="tests/test_openai_engine.py::test_the_failure_names_only_settings_the_config_has",
    ),
    Break(
        name="ray-falls-back-to-one-process",
        removes="ray.workers > 1 shards generation and scoring across Ray actors",
        file="iro/pipeline/execution.py",
        old="        return RayExecutor()\n",
        new="        return InProcess()\n",
        tests="tests/test_ray_sharding.py -k chunked_search",
    ),
    Break(
        name="ray-address-waits",
        removes="a ray.address where no cluster listens is refused in seconds, naming it",
        file="iro/pipeline/sharding.py",
        old="    if address not in LOCAL:\n        _check_reachable(address)\n",
        new="",
        tests="tests/test_ray_sharding.py -k bad_ray",
    ),
    # -- one break per row of docs/reliability.md's "Guarantees and their tests" table --
    Break(
        name="dead-staging-kept",
        removes="a killed process's staging is removed by the next run (kill -9 row)",
        file="iro/core/store/local.py",
        # a host name with a hyphen (every Linux one here: `_host` appends the pid namespace)
        # no longer matches, so no staging directory is ever recognised as a dead process's
        old=r"(?P<owner>\d+-\d+@[A-Za-z0-9-]*)",
        new=r"(?P<owner>\d+-\d+@[A-Za-z0-9]*)",
        tests="tests/test_store_faults.py -k staging_of_a_killed_build",
    ),
    Break(
        name="checksum-not-compared",
        removes="a damaged artifact is refused on read, naming the file (damaged artifact row)",
        file="iro/core/store/local.py",
        old="        return manifest, first_file_problem(files, file_problem)\n",
        new="        return manifest, None\n",
        tests="tests/test_store_faults.py -k damage_is_detected",
    ),
    Break(
        name="enospc-not-translated",
        removes="a full store gives a clear error naming the directory (full store row)",
        file="iro/core/store/local.py",
        old="    if err.errno in STORAGE_ERRNOS:\n        return True\n",
        new="",
        tests="tests/test_store_faults.py -k disk_full_while_building",
    ),
    Break(
        name="failed-build-leaves-staging",
        removes="a build that fails (a full disk) leaves nothing partial (full store row)",
        file="iro/core/store/local.py",
        old=(
            "        except BaseException:\n"
            "            shutil.rmtree(staging, ignore_errors=True)\n"
            "            raise\n"
        ),
        new="        except BaseException:\n            raise\n",
        tests="tests/test_store_faults.py -k disk_full_while_building",
    ),
    Break(
        name="run-lock-no-op",
        removes="a second process on one run waits for the first (two processes row)",
        file="iro/core/store/local.py",
        old='with directory_lock(self.run_dir(run_name) / ".lock", on_wait=waiting):',
        new="with ExitStack():",
        tests=(
            "tests/test_store_faults.py::"
            "test_a_live_holder_makes_the_second_process_wait_and_the_work_is_done_once"
        ),
    ),
    Break(
        name="gc-ignores-parents",
        removes="gc keeps the parents of what a run references, transitively (gc row)",
        file="iro/core/store/refs.py",
        old="        todo |= parents_of(key) & existing - seen\n",
        new="",
        tests="tests/test_store_faults.py -k gc_removes_only_what_no_run_references",
    ),
    Break(
        name="endpoint-retries-a-refusal",
        removes="a refused request (400, 401, ...) is not retried (endpoint row)",
        file="iro/core/endpoint.py",
        old="return err.status_code in RETRIED_STATUS or err.status_code >= 500",
        new="return err.status_code >= 400",
        tests="tests/test_remote_faults.py -k refusal_is_not_retried",
    ),
    Break(
        name="endpoint-ignores-max-retries",
        removes="an endpoint is retried max_retries times, no more (endpoint row)",
        file="iro/core/endpoint.py",
        old="if not _retried(err) or attempts > self.max_retries:",
        new="if not _retried(err) or attempts > 3:",
        tests="tests/test_remote_faults.py -k judge_stops_at_the_first",
    ),
    Break(
        name="oom-not-translated",
        removes="out of memory stops the stage naming the memory settings (OOM row)",
        file="iro/core/errors.py",
        old="        if not is_out_of_memory(err):\n",
        new="        if not isinstance(err, MemoryError):\n",
        tests="tests/test_remote_faults.py -k out_of_memory_stops_generation",
    ),
    Break(
        name="iteration-lock-skipped",
        removes="two triggers of one iteration: one builds, the other waits and reuses",
        file="flows/iteration.py",
        old=(
            "    with pipeline.store.run_lock(cfg.run_name):\n"
            "        return _iteration(pipeline, iteration)\n"
        ),
        new="    return _iteration(pipeline, iteration)\n",
        tests="tests/test_remote_faults.py -k two_flow_runs_of_one_iteration",
        slow=True,
    ),
    Break(
        name="judge-key-logged",
        removes="an API key used by a flow run never reaches Prefect's database, logs or files",
        file="reward/openai_client.py",
        old="        )\n    return key\n",
        new='        )\n    log.info("API key from %s: %s", env_var, key)\n    return key\n',
        tests="tests/test_prefect_faults.py::test_the_api_key_never_reaches_the_prefect_server",
        slow=True,
    ),
    Break(
        name="softmax-weights-not-normalised",
        removes="softmax reweighting weights are a distribution (property row)",
        file="valuefn/reweight.py",
        old="    return weights / weights.sum()\n",
        new="    return weights\n",
        tests="tests/test_properties.py -k softmax_weights_are_a_distribution",
    ),
    Break(
        name="sampling-not-in-the-id",
        removes="an artifact's id changes exactly when its content can (the sampler's settings)",
        file="iro/pipeline/identity.py",
        old='    "policy.endpoint.supports_top_k",\n    "sampling",\n)\n',
        new='    "policy.endpoint.supports_top_k",\n)\n',
        tests="tests/test_identity_behaviour.py -m 'not slow' -k sample_rollout",
    ),
    Break(
        name="workers-device-not-recorded",
        removes="a search sharded over Ray records the workers' device in its id",
        file="iro/pipeline/identity.py",
        old="    if stage in SEARCH_STAGES and cfg.ray.workers > 1:\n",
        new="    if False:\n",
        tests="tests/test_identity.py -k ray",
    ),
    Break(
        name="key-in-score-metrics",
        removes="an API key used by a run reaches no file the run leaves",
        file="iro/pipeline/runner.py",
        old='            return {"reward_mean": float(scored["reward"].mean()), "rows": len(scored)}\n',
        new=(
            '            return {"reward_mean": float(scored["reward"].mean()), "rows": len(scored),\n'
            '                    "key": __import__("os").environ.get("IRO_REWARD_JUDGE_KEY", "")}\n'
        ),
        tests="tests/test_security.py -k real_run",
    ),
    Break(
        name="key-logged-in-a-run",
        removes="an API key used by a run reaches no log record or output stream",
        file="reward/openai_client.py",
        old="        )\n    return key\n",
        new='        )\n    log.info("API key from %s: %s", env_var, key)\n    return key\n',
        tests="tests/test_security.py -k real_run",
    ),
    Break(
        name="build-in-place",
        removes="a build killed at any point leaves no visible artifact (staging, then rename)",
        file="iro/core/store/local.py",
        old="        staging = self._new_staging(target)\n",
        new="        target.mkdir(parents=True)\n        staging = target\n",
        tests="tests/test_kill_points.py",
    ),
    Break(
        name="rounding-zero-supports",
        removes="a difference is supported only when its printed interval excludes zero",
        file="iro/core/stats.py",
        old="    return round(scale * ci_low, decimals) > 0 or round(scale * ci_high, decimals) < 0\n",
        new="    return ci_low > 0 or ci_high < 0\n",
        tests="tests/test_winrate.py tests/test_bench_summary.py",
    ),
    Break(
        name="percentile-bootstrap",
        removes="intervals are scipy's paired BCa bootstrap",
        file="iro/core/stats.py",
        old='method="BCa"',
        new='method="percentile"',
        tests="tests/test_winrate.py -k bootstrap",
    ),
    # -- further breaks go here (identity, key leaks, kill points, statistics, ...): append a
    # Break above this line, then run it with --only NAME --baseline; it must be caught --
]


class StaleBreak(Exception):
    """A break whose `old` snippet does not occur exactly once: the code moved."""


@dataclass
class Result:
    name: str
    result: str  # caught, NOT CAUGHT, error, skipped
    seconds: float = 0.0
    detail: str = ""  # the first failing test, or why it is an error or skipped
    output: str = ""  # the tail of pytest's output, shown for errors


# -- the copy of the code, one break, and its tests --


def make_copy(prefix: str) -> Path:
    """A temporary copy of the working tree (what git knows of: tracked, and untracked but not
    ignored) whose `python -m pytest` imports the copy's `iro`, not the installed one."""
    copy = Path(tempfile.mkdtemp(prefix=f"iro-mutation-{prefix}-"))
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not os.path.lexists(source):  # tracked, but deleted in the working tree
            continue
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    for package in SUBPACKAGES:
        (copy / "iro" / package).symlink_to(Path("..") / package)
    return copy


def check_imports_from(copy: Path) -> None:
    """Fail loudly if pytest in `copy` would import the code of another tree: every break
    would then look NOT CAUGHT."""
    probe = "import importlib.util as u; print(u.find_spec('iro.valuefn.training').origin)"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"error: in the copy {copy}, iro.valuefn.training is imported from {found}")


def occurrences(brk: Break, root: Path) -> int:
    path = root / brk.file
    return path.read_text().count(brk.old) if path.is_file() else 0


def stale_reason(brk: Break, root: Path) -> str | None:
    """Why `brk` cannot be applied to the code at `root`, or None when it can."""
    count = occurrences(brk, root)
    if count == 1:
        return None
    return (
        f"its old snippet occurs {count} times in {brk.file} (it must occur exactly once): "
        f"the code moved; update break {brk.name!r} in scripts/mutation_check.py"
    )


def apply(brk: Break, copy: Path) -> None:
    """Replace the break's one `old` snippet in the copy with `new`."""
    reason = stale_reason(brk, copy)
    if reason is not None:
        raise StaleBreak(reason)
    path = copy / brk.file
    path.write_text(path.read_text().replace(brk.old, brk.new))


@dataclass
class Run:
    returncode: int | None  # None: timed out
    seconds: float
    output: str


def run_tests(selection: str, copy: Path, timeout_s: int) -> Run:
    """pytest with the project's interpreter on `selection`, inside `copy`."""
    command = [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *shlex.split(selection)]
    started = time.monotonic()
    with subprocess.Popen(
        command,
        cwd=copy,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a timeout stops what pytest started, too
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout_s)
            returncode: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            returncode = None
        except BaseException:  # Ctrl-C: stop pytest and what it started, then stop here
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return Run(returncode, time.monotonic() - started, output)


# -- reading pytest's output --


def tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def first_failure(output: str) -> str:
    """The first test reported FAILED or ERROR in pytest's short summary."""
    match = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.MULTILINE)
    return match.group(1) if match else ""


def summary_line(output: str) -> str:
    """pytest's last line, e.g. `3 passed, 1 deselected in 2.01s`."""
    lines = output.rstrip().splitlines()
    return lines[-1].strip("= ") if lines else ""


def judge(brk: Break, run: Run) -> Result:
    """What pytest's exit code says about the break."""
    if run.returncode is None:
        detail = f"timed out after {brk.timeout_s} s"
        return Result(brk.name, "error", run.seconds, detail, tail(run.output))
    if run.returncode == 1:
        return Result(brk.name, "caught", run.seconds, first_failure(run.output))
    summary = summary_line(run.output)
    if run.returncode == 0 and " passed" in summary:
        return Result(brk.name, "NOT CAUGHT", run.seconds, f"all passed: {summary}")
    if run.returncode == 0:
        detail = f"no test ran: {summary}"
    else:
        detail = f"pytest exit code {run.returncode} (not a test failure): {summary}"
    return Result(brk.name, "error", run.seconds, detail, tail(run.output))


# -- the whole check --


def check_break(brk: Break, baseline: dict[str, Run] | None, keep: bool) -> Result:
    """Apply `brk` to a fresh copy, run its tests there, and say whether they caught it."""
    if baseline is not None:
        clean = baseline[brk.tests]
        if clean.returncode != 0:
            why = "timed out" if clean.returncode is None else f"exit code {clean.returncode}"
            detail = f"its tests fail unbroken ({why}): {first_failure(clean.output)}"
            return Result(brk.name, "error", clean.seconds, detail, tail(clean.output))
    copy = make_copy(brk.name)
    try:
        apply(brk, copy)
        print(f"{brk.name}: running {brk.tests}", flush=True)
        return judge(brk, run_tests(brk.tests, copy, brk.timeout_s))
    except StaleBreak as err:
        return Result(brk.name, "error", 0.0, f"refused: {err}")
    finally:
        if keep:
            print(f"{brk.name}: kept the copy at {copy}", flush=True)
        else:
            shutil.rmtree(copy, ignore_errors=True)


def run_baseline(breaks: list[Break], keep: bool) -> dict[str, Run]:
    """Each distinct test selection run once on an unbroken copy."""
    copy = make_copy("unbroken")
    try:
        check_imports_from(copy)
        runs: dict[str, Run] = {}
        for brk in breaks:
            if brk.tests not in runs:
                print(f"baseline: running {brk.tests}", flush=True)
                runs[brk.tests] = run_tests(brk.tests, copy, brk.timeout_s)
        return runs
    finally:
        if keep:
            print(f"baseline: kept the copy at {copy}", flush=True)
        else:
            shutil.rmtree(copy, ignore_errors=True)


def print_table(results: list[Result]) -> None:
    width = max(len(r.name) for r in results)
    print(f"\n{'break':<{width}}  {'result':<10}  {'seconds':>7}  first failing test / note")
    for r in results:
        print(f"{r.name:<{width}}  {r.result:<10}  {r.seconds:>7.1f}  {r.detail}")
    for r in results:
        if r.output:
            print(f"\n--- {r.name}: the end of pytest's output ---\n{r.output}")


def print_list(breaks: list[Break]) -> None:
    for brk in breaks:
        count = occurrences(brk, REPO)
        state = "applies" if count == 1 else f"STALE: old occurs {count} times"
        slow = ", slow" if brk.slow else ""
        print(f"{brk.name} ({state}{slow})\n  removes: {brk.removes}")
        print(f"  in {brk.file}; caught by: {brk.tests}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Apply deliberate breaks, each to its own copy of the code, and report "
        "those their tests do not catch."
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these breaks")
    parser.add_argument("--list", action="store_true", help="list the breaks and stop")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run each break's tests on an unbroken copy; a failure there is an error",
    )
    parser.add_argument("--keep", action="store_true", help="keep the copies for inspection")
    parser.add_argument(
        "--include-slow", action="store_true", help="also run the breaks marked slow"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [b.name for b in BREAKS]
    if len(set(names)) != len(names):
        sys.exit("error: two breaks share a name in BREAKS")
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        sys.exit(f"error: no break named {', '.join(unknown)}; known: {', '.join(names)}")
    chosen = [b for b in BREAKS if args.only is None or b.name in args.only]
    if args.list:
        print_list(chosen)
        return 0

    started = time.monotonic()
    wanted = [b for b in chosen if args.include_slow or not b.slow]
    not_run = [
        Result(b.name, "skipped", detail="slow: add --include-slow to run it")
        for b in chosen
        if b not in wanted
    ]
    not_run += [  # refused before any copy is made: the code moved
        Result(b.name, "error", detail=f"refused: {stale_reason(b, REPO)}")
        for b in wanted
        if stale_reason(b, REPO) is not None
    ]
    to_run = [b for b in wanted if stale_reason(b, REPO) is None]
    baseline = run_baseline(to_run, args.keep) if args.baseline and to_run else None
    if baseline is None and to_run:  # otherwise the baseline's copy was checked
        probe = make_copy("probe")
        try:
            check_imports_from(probe)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    results = [check_break(b, baseline, args.keep) for b in to_run] + not_run
    order = {name: i for i, name in enumerate(names)}
    print_table(sorted(results, key=lambda r: order[r.name]))
    print(f"\ntotal: {time.monotonic() - started:.0f} s")
    failed = [r.name for r in results if r.result in ("NOT CAUGHT", "error")]
    if failed:
        print(f"not caught or errored: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
