"""Build a run's win-rate report from its evaluation outputs and store it as an artifact.

The evaluation table of a run (`runs/<run>/evaluation.json`) lists one `eval/<id>` artifact per
method; each holds the held-out outputs (prompt_id, prompt, reference, response, reward,
reference_reward). Every method is compared with one baseline (the reference outputs or another
method) on the prompts both have, by reward and, if configured, by a pairwise LLM judge and by
AlpacaEval. The report artifact's parents are those eval artifacts, so a new evaluation makes a
new report version and an unchanged one is reused.

Each report is named in the run's `report` record (`runs/<run>/report.json`), so `iro store gc`
keeps it (a judge's report costs API calls to rebuild); the record keeps every report of the
run's current evaluation and drops those of evaluations it no longer lists.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from iro.core.config import ReportConfig, RunConfig
from iro.core.fsutil import atomic_write_json, atomic_write_text
from iro.core.stats import WinRate, reward_win_rate, summarize
from iro.core.store.local import Artifact
from iro.core.store.protocol import Store
from iro.pipeline.identity import config_slice
from iro.reports.alpaca import run_alpaca_eval
from iro.reports.judge import PROMPTS, judge_pairs
from iro.reports.render import markdown_summary
from iro.reports.rows import ReportRow
from iro.reward.openai_client import ChatClient

log = logging.getLogger(__name__)

STAGE = "report"
STAGE_VERSION = 2
REFERENCE = "reference"
RECORD = "report"  # the run step naming the run's reports: runs/<run>/report.json


class ReportError(ValueError):
    """A report that cannot be made from what the store holds; names what is missing."""


def latest_run(store: Store) -> str:
    """The run whose evaluation table was written last."""
    tables = sorted(
        store.root.glob("runs/*/evaluation.json"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if not tables:
        raise ReportError(f"no run with an evaluation table under {store.root / 'runs'}")
    return tables[0].parent.name


def _evaluation_table(store: Store, run_name: str) -> Path:
    path = store.run_dir(run_name) / "evaluation.json"
    if not path.is_file():
        raise ReportError(f"run {run_name!r} has no evaluation table at {path}; run it first")
    return path


def load_run_outputs(store: Store, run_name: str) -> dict[str, Artifact]:
    """Method label -> its eval artifact, in the order of the run's evaluation table."""
    path = _evaluation_table(store, run_name)
    rows = json.loads(path.read_text()).get("evaluation", [])
    if not rows:
        raise ReportError(f"run {run_name!r}: its evaluation table at {path} is empty")
    return {row["method"]: store.load(store.root / row["artifact"]) for row in rows}


def _baseline_table(outputs: dict[str, Artifact], baseline: str) -> pd.DataFrame:
    if baseline == REFERENCE:
        table = next(iter(outputs.values())).table()
        return table.assign(response=table["reference"], reward=table["reference_reward"])
    if baseline not in outputs:
        raise ReportError(
            f"baseline {baseline!r} is not an evaluated method; choose reference or one of "
            f"{sorted(outputs)}"
        )
    return outputs[baseline].table()


def _paired(method: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    columns = ["prompt_id", "prompt", "response", "reward"]
    paired = method[columns].merge(
        baseline[["prompt_id", "response", "reward"]], on="prompt_id", suffixes=("", "_baseline")
    )
    if paired.empty:
        raise ReportError("method and baseline outputs share no prompt")
    return paired


def _row(
    method: str, baseline: str, kind: str, metric: str, rate: WinRate, paired, **extra
) -> ReportRow:
    return ReportRow(
        method=method,
        baseline=baseline,
        kind=kind,
        metric=metric,
        win_rate=rate.win_rate,
        ci_low=rate.ci_low,
        ci_high=rate.ci_high,
        interval=rate.interval,
        wins=rate.wins,
        ties=rate.ties,
        losses=rate.losses,
        failures=rate.failures,
        prompts=len(paired),
        mean_reward=float(paired["reward"].mean()),
        **extra,
    )


def _judge_rows(
    cfg: ReportConfig, client: ChatClient, method: str, paired: pd.DataFrame, out: Path
) -> ReportRow:
    prompt = PROMPTS[cfg.pairwise_judge]
    judgements = judge_pairs(
        client, prompt, paired["prompt"].tolist(), paired["response"].tolist(),
        paired["response_baseline"].tolist(),
    )  # fmt: skip
    details = pd.DataFrame([asdict(j) for j in judgements]).assign(
        prompt_id=paired["prompt_id"].to_numpy()
    )
    details.to_parquet(out / f"judge-{method}.parquet")
    rate = summarize(j.outcome for j in judgements)
    unparsable = sum(
        (j.answer_method_first is not None and j.verdict_method_first is None)
        + (j.answer_method_second is not None and j.verdict_method_second is None)
        for j in judgements
    )
    note = f"{unparsable} unparsable answers, {client.failures} failed requests so far"
    return _row(
        method, cfg.baseline, "judge", "judge_win_rate", rate, paired,
        judge=cfg.judge.model, prompt_version=prompt.version, note=note,
    )  # fmt: skip


def _alpaca_row(
    cfg: ReportConfig, api_key: str, method: str, paired: pd.DataFrame, out: Path
) -> ReportRow:
    directory = out / f"alpaca-eval-{method}"
    result = run_alpaca_eval(
        directory, paired["prompt"].tolist(), paired["response"].tolist(),
        paired["response_baseline"].tolist(), method, cfg.baseline, cfg.judge.model, api_key,
        cfg.judge.base_url,
    )  # fmt: skip
    atomic_write_json(directory / "result.json", asdict(result))
    percent = None if result.value is None else result.value / 100
    se = None if result.standard_error is None else result.standard_error / 100
    low = None if percent is None or se is None else max(0.0, percent - 1.96 * se)
    high = None if percent is None or se is None else min(1.0, percent + 1.96 * se)
    losses = result.n_total - result.n_wins - result.n_draws
    rate = WinRate(
        result.n_wins, result.n_draws, losses, result.failures, percent, low, high,
        interval="normal-95 from alpaca-eval's standard error",
    )  # fmt: skip
    return _row(
        method, cfg.baseline, "alpaca_eval", result.metric, rate, paired,
        judge=cfg.judge.model, prompt_version="alpaca-eval-" + "iro_pairwise", note=result.reason,
    )  # fmt: skip


def report_config_slice(cfg: ReportConfig) -> dict[str, Any]:
    """What the report depends on (iro/pipeline/identity.py): no key, key source or retry count."""
    return config_slice(RunConfig(report=cfg), "report")


def record_report(store: Store, run_name: str, report: Artifact, evaluated: list[Artifact]) -> Path:
    """Name `report` in the run's RECORD, beside the reports of the same evaluation, so that gc
    keeps them; `evaluated` are the eval artifacts the run's evaluation table lists now."""
    current = {f"{a.stage}/{a.id}" for a in evaluated}
    entry = {
        "stage": report.stage,
        "id": report.id,
        "artifact": f"{report.stage}/{report.id}",
        "baseline": report.manifest["config"].get("report.baseline"),
        "evaluated": [f"{p['stage']}/{p['id']}" for p in report.manifest["parents"]],
    }
    path = store.run_dir(run_name) / f"{RECORD}.json"
    try:
        previous = json.loads(path.read_text())["reports"] if path.is_file() else []
        kept = [
            e
            for e in previous
            if e["artifact"] != entry["artifact"] and set(e["evaluated"]) <= current
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("run record %s is unreadable (%s); writing it anew", path, err)
        kept = []
    return store.record_run_step(run_name, RECORD, {"reports": [*kept, entry]})


def build_report(
    store: Store, run_name: str, cfg: ReportConfig, api_key: str | None = None
) -> Artifact:
    """Compute (or reuse) the report artifact of `run_name` and record it in the run (see
    `record_report`); `api_key` only if a judge runs.

    Holds the run's lock (`ArtifactStore.run_lock`) throughout: gc cannot remove the report
    between its build and its record, and a run of that name in progress finishes first.
    """
    needs_judge = cfg.pairwise_judge is not None or cfg.alpaca_eval
    if needs_judge and api_key is None:
        raise ReportError("a judge report needs an API key (resolve it before building)")
    _evaluation_table(store, run_name)  # an unknown run leaves no lock directory behind
    with store.run_lock(run_name):
        outputs = load_run_outputs(store, run_name)
        report = _build(store, run_name, cfg, api_key, outputs)
        record_report(store, run_name, report, list(outputs.values()))
    return report


def _build(
    store: Store,
    run_name: str,
    cfg: ReportConfig,
    api_key: str | None,
    outputs: dict[str, Artifact],
) -> Artifact:
    """The report artifact of `outputs` (method -> eval artifact), reused if it exists."""
    baseline = _baseline_table(outputs, cfg.baseline)
    methods = cfg.methods or [m for m in outputs if m != cfg.baseline]
    unknown = [m for m in methods if m not in outputs]
    if unknown:
        raise ReportError(f"methods {unknown} are not in run {run_name!r}: {sorted(outputs)}")
    parents = [outputs[m] for m in dict.fromkeys([*methods, cfg.baseline]) if m in outputs]

    def build(out: Path) -> dict[str, Any]:
        client = None
        if cfg.pairwise_judge is not None:
            j = cfg.judge
            regex = PROMPTS[cfg.pairwise_judge].answer_regex
            client = ChatClient(
                model=j.model, api_key=api_key, base_url=j.base_url, max_tokens=j.max_tokens,
                max_retries=j.max_retries, concurrency=j.concurrency,
                extra_body={"structured_outputs": {"regex": regex}} if j.constrain_format else None,
            )  # fmt: skip
        rows: list[ReportRow] = []
        for method in methods:
            paired = _paired(outputs[method].table(), baseline)
            if cfg.reward_winrate:
                rate = reward_win_rate(paired["reward"], paired["reward_baseline"])
                rows.append(_row(method, cfg.baseline, "reward", "reward_win_rate", rate, paired))
            judged = paired.head(cfg.max_prompts) if cfg.max_prompts else paired
            if client is not None:
                rows.append(_judge_rows(cfg, client, method, judged, out))
            if cfg.alpaca_eval:
                rows.append(_alpaca_row(cfg, api_key, method, judged, out))
        table = pd.DataFrame([asdict(r) for r in rows])
        table.to_parquet(out / "table.parquet")
        report = {"run_name": run_name, "baseline": cfg.baseline, "rows": [asdict(r) for r in rows]}
        atomic_write_json(out / "report.json", report)
        atomic_write_text(out / "summary.md", markdown_summary(run_name, cfg.baseline, rows))
        return {
            "rows": len(rows),
            "judge_requests": client.requests if client else 0,
            "judge_request_failures": client.failures if client else 0,
        }

    return store.create(STAGE, STAGE_VERSION, report_config_slice(cfg), parents, build, run_name)
