"""Does IRO beat best-of-N at equal compute? One run that answers with intervals.

    python benchmarks/iro_vs_bon.py --size quick        # minutes: development
    python benchmarks/iro_vs_bon.py --size full         # benchmarks/RESULTS.md's numbers

In one process, on the same held-out prompts, seeds and reward:
- trains IRO iterations 1..K through the pipeline (artifacts reused from the store on a rerun);
- for each evaluation seed: draws 16 plain samples per prompt once, which give the base model
  (sample 1), best-of-U for U = 4, 8, 16 (the best of the first U samples: the same draws a
  best-of-U run would make), and the value models' quality on them; then runs IRO iteration k at
  U = w*k = 4, the last iteration at U = 16 (w = k = 4) and at U = 4 with chunks of l = 8 tokens
  (half the engine steps and scoring calls), and early rejection guided by the last iteration
  (specrej: N = 16 samples, half of the unfinished kept every l = 8 tokens) on the first
  `cost_prompts` prompts, the reward-guided search at U = 4, and ARGS on a prefix of the
  prompts; with `--methods vas ivl`,
  VAS (its own TD(lambda) value model) and IVL (its residual) on every prompt;
- what each method's own decoding costs, its final reward pick included (`iro.core.cost`):
  seconds, policy tokens, value tokens and reward calls per prompt, averaged over seeds, each run
  from a cold prefix cache. Each method is measured as a user would run it: best-of-U for
  U = 1, 4, 8, 16 is decoded again as best-of-U, for its cost only, on the first `cost_prompts`
  prompts, and best-of-32 and best-of-48, beyond the pool, for their cost and quality there.
  Value training's seconds (the store's build time of iterations 1..k) are reported apart, and
  spread over 1,000 prompts;
- win rate against the reference and mean reward per method, with 95% BCa bootstrap intervals
  over prompts (each prompt's outcome averaged over seeds), and the paired differences the claim
  rests on (IRO at U=4 minus BoN-4, iteration 2 minus iteration 1, IRO at U=4 minus BoN-16),
  each marked supported only when its interval, as printed, excludes zero (`shows_difference`);
  and at equal compute: each other method minus best-of-N at the largest U whose seconds per
  prompt are not above its own (`compute_matched`);
- how well V_k ranks partial responses (after 8, 16, 24 tokens) of held-out plain samples.

Writes benchmarks/results/iro_vs_bon-<size>.json and .md, three PNG plots (test-time scaling,
iterations, and the quality-cost frontier) and the per-prompt rewards of every method and seed
(-rewards.csv) beside them (the name also carries the split when it is not the held-out one, and
the config when it is not the demo's: iro_vs_bon-quick-sentiment.md). Seeds vary the decoding;
the value models are trained once (config seed), which the report says.

    python benchmarks/iro_vs_bon.py --resummarise benchmarks/results/iro_vs_bon-full.json

recomputes a finished run's intervals, claims, report and plots from its -rewards.csv and the
costs its .json recorded, scoring only the reference summaries again (seconds): no training or
decoding. A run recorded without costs reports them as not measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iro.app.environment import prepare_environment
from iro.core.config import RunConfig, load_config, parse_config, parse_override, set_dotted_key
from iro.core.cost import PER_PROMPT, Cost, measure
from iro.core.data import eval_slice, load_prompts, validation_slice
from iro.core.engines.factory import get_engine
from iro.core.fsutil import atomic_write_json, atomic_write_text
from iro.core.stats import (
    BOOTSTRAP_RESAMPLES,
    PERCENT_DECIMALS,
    paired_bootstrap,
    points,
    shows_difference,
    win_outcomes,
)
from iro.core.store.local import Artifact
from iro.pipeline.decoder import decode
from iro.pipeline.execution import generate, score_rows
from iro.pipeline.generation import policy_tokenizer
from iro.pipeline.guidance import build_value_ensemble, reward_prior
from iro.pipeline.ivl import RESIDUAL_DIR
from iro.pipeline.methods import VAS_RUN_SETTINGS, samples_per_prompt, search_settings
from iro.pipeline.runner import VALUE_DIR, Pipeline
from iro.pipeline.scoring import best_per_prompt, build_run_reward
from iro.valuefn.diagnostics import prefix_quality
from iro.valuefn.scoring import Prior, ValueEnsemble
from iro.valuefn.search import SearchSettings

log = logging.getLogger("benchmarks.iro_vs_bon")
RESULTS = Path(__file__).parent / "results"
BON_US = (4, 8, 16)
# best-of-U beyond the pool, each decoded on its own on the cost prompts: the frontier where IRO
# at U = 16 spends its seconds
LARGE_BON_US = (32, 48)
EVAL_SEED_BASE = 7919
QUALITY_CANDIDATES = 4  # value quality is measured on each prompt's first 4 draws (6 pairs)
PRIOR_GUIDED = "reward-guided"  # IRO's search ranked by the reward of the prefix, no value model
REWARD_DECIMALS = 4  # mean rewards and their differences are printed with four decimals
WIDE = (4, 4)  # (w, k) of IRO at U = 16
COARSE_CHUNK = 8  # l of IRO's cheaper setting: half the engine steps, half the scoring calls
REJECTION = (16, 0.5, 8)  # (N, keep_fraction, l) of specrej, on the cost prompts only
AMORTISED_OVER = 1000  # prompts served, over which value training's seconds are spread
BEST_OF_N = re.compile(r"base|bon-\d+")  # best-of-N's family: U = 1 is the base model

SIZES: dict[str, dict[str, Any]] = {
    # minutes: one decoding seed, two iterations
    "quick": {
        "overrides": {"data.prompts_per_iteration": 128, "data.eval_prompts": 64, "iterations": 2},
        "seeds": (0,),
        "args_prompts": 8,
        # one engine call's worth (policy.prompts_per_call), as the full-set searches batch them
        "cost_prompts": 32,
    },
    # benchmarks/RESULTS.md's numbers. On 2 cores with AVX512-BF16 (bf16) the run without the
    # cost prompts' methods took 39 minutes from an empty store; on 2 AVX2 cores (float32) one
    # seed takes 46 minutes of decoding and the three iterations 26 minutes of training
    # (--seeds 0 keeps a run within about 75 minutes there)
    "full": {
        "overrides": {"data.prompts_per_iteration": 128, "data.eval_prompts": 120, "iterations": 3},
        "seeds": (0, 1, 2),
        "args_prompts": 16,
        "cost_prompts": 32,
    },
}


def neighbour_guides(cfg: RunConfig, methods: list[str]) -> dict[str, tuple[RunConfig, Path]]:
    """What `--methods vas ivl` decode with: label -> (config, guide model directory).

    VAS: one iteration with VAS's settings (TD(lambda) value, vocabulary head) on the same
    training prompts as IRO's first; IVL: the residual learned from demonstrations.
    """
    guides = {}
    if "vas" in methods:
        data = cfg.model_dump(mode="json")
        for key, value in {**VAS_RUN_SETTINGS, "value.head": "vocabulary"}.items():
            set_dotted_key(data, key, value)
        vas_cfg = parse_config(data, "vas settings")
        value = Pipeline(vas_cfg).iteration(1, [])["value"]
        guides["vas-iter1"] = (vas_cfg, value.file(VALUE_DIR))
    if "ivl" in methods:
        guides["ivl"] = (cfg, Pipeline(cfg).train_residual().file(RESIDUAL_DIR))
    return guides


def train_iterations(pipeline: Pipeline) -> tuple[list[Artifact], list[dict[str, Any]]]:
    """V_1..V_K and each iteration's facts: `seconds` in this run (near 0 where the store had
    the artifacts), `build_seconds` what building its rollout, scoring, reweighting and value
    model took, whenever that was (the store's manifests)."""
    values, summary = [], []
    for k in range(1, pipeline.cfg.iterations + 1):
        started = time.time()
        stages = pipeline.iteration(k, values)
        values.append(stages["value"])
        summary.append(
            {
                "iteration": k,
                "seconds": round(time.time() - started, 1),
                "build_seconds": round(
                    sum(a.manifest["build_seconds"] for a in stages.values()), 1
                ),
                "rollout_reward_mean": stages["score"].metrics["reward_mean"],
                "reweight": stages["reweight"].metrics,
                "value_training": stages["value"].metrics,
            }
        )
        log.info("iteration %d: %s", k, summary[-1])
    return values, summary


def with_search(cfg: RunConfig, beams: int, children: int) -> RunConfig:
    search = cfg.search.model_copy(update={"beams": beams, "children": children})
    return cfg.model_copy(update={"search": search})


def with_chunk(cfg: RunConfig, chunk_tokens: int) -> RunConfig:
    search = cfg.search.model_copy(update={"chunk_tokens": chunk_tokens})
    return cfg.model_copy(update={"search": search})


def with_rejection(
    cfg: RunConfig, samples: int, keep_fraction: float, chunk_tokens: int
) -> RunConfig:
    rejection = cfg.search.rejection.model_copy(
        update={"samples": samples, "keep_fraction": keep_fraction, "chunk_tokens": chunk_tokens}
    )
    return cfg.model_copy(update={"search": cfg.search.model_copy(update={"rejection": rejection})})


def sample_pool(cfg: RunConfig, prompts: pd.DataFrame, seed: int) -> pd.DataFrame:
    """16 plain samples per prompt, scored, in draw order (candidate 0 is the first draw)."""
    stop = tuple(cfg.sampling.stop or ())
    settings = SearchSettings.best_of_n(max(BON_US), cfg.sampling.max_new_tokens, stop)
    pool = generate(cfg, prompts, settings, [], seed, guided=False)
    return score_rows(cfg, pool)


def pool_methods(pool: pd.DataFrame) -> dict[tuple[str, int], pd.Series]:
    """base (the first draw) and best-of-U (the best of the first U draws), per prompt."""
    by_prompt = pool.sort_values(["prompt_id", "candidate"]).groupby("prompt_id", sort=False)
    methods = {("base", 1): by_prompt["reward"].first()}
    for u in BON_US:
        methods[(f"bon-{u}", u)] = by_prompt["reward"].apply(lambda r, u=u: r.iloc[:u].max())
    return methods


def measured(cfg: RunConfig, run: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, Cost]:
    """`run()`, one output per prompt, and what producing it cost, from a cold prefix cache: a
    method's cost does not depend on which methods decoded the same prompts before it."""
    get_engine(cfg.policy, cfg.cache_dir, cfg.seed).forget_prefixes()
    with measure() as cost:
        outputs = run()
    return outputs, cost


def decoded(
    cfg: RunConfig, prompts: pd.DataFrame, method: str, value_dirs, seed: int
) -> tuple[pd.Series, Cost]:
    """Each prompt's reward under `method`, and the cost of decoding it as a user would: the
    search and, where the method picks by reward, that pick; scoring the output for this report
    afterwards (a value-picked or token-level output) is not part of the cost."""
    outputs, cost = measured(cfg, partial(decode, cfg, prompts, method, value_dirs, seed))
    if "reward" not in outputs.columns:
        outputs = score_rows(cfg, outputs)
    return outputs.set_index("prompt_id")["reward"], cost


def prior_guided(cfg: RunConfig, prompts: pd.DataFrame, seed: int) -> tuple[pd.Series, Cost]:
    """IRO's search ranked by the reward of the partial responses alone: no value learning.

    The ablation that shows what the learned residual of value.prior = reward adds.
    """

    def run() -> pd.DataFrame:
        table = generate(cfg, prompts, search_settings(cfg, "iro"), [], seed, prior_only=True)
        return best_per_prompt(score_rows(cfg, table))

    best, cost = measured(cfg, run)
    return best.set_index("prompt_id")["reward"], cost


def best_of_u_costs(cfg: RunConfig, prompts: pd.DataFrame, seed: int) -> dict[str, Cost]:
    """What best-of-U costs decoded on its own, for U = 1 (base) and BON_US: its quality comes
    from the shared pool of draws, which keeps the methods paired, but a pool sliced to U costs
    nothing of its own."""
    runs = {"base": (cfg, "base")}
    runs |= {f"bon-{u}": (with_search(cfg, 1, u), "bon") for u in BON_US}
    return {
        label: measured(c, partial(decode, c, prompts, method, [], seed))[1]
        for label, (c, method) in runs.items()
    }


def large_best_of(
    cfg: RunConfig, prompts: pd.DataFrame, seed: int
) -> dict[tuple[str, int], tuple[pd.Series, Cost]]:
    """Best-of-U for LARGE_BON_US, each decoded as a user would run it: its rewards and its
    cost. Its draws are its own, not the pool's: it pairs with the other methods by prompt."""
    return {
        (f"bon-{u}", u): decoded(with_search(cfg, 1, u), prompts, "bon", [], seed)
        for u in LARGE_BON_US
    }


def cost_row(
    method: str, seed: int, prompts: int, cost: Cost, token_level: bool = False
) -> dict[str, Any]:
    """One measured decoding. Token-level methods run the policy and the value models directly,
    outside the engines and the ensemble that count tokens: only their seconds and reward calls
    are kept."""
    row = {"method": method, "seed": seed, "prompts": prompts, **asdict(cost)}
    if token_level:
        row |= {"policy_tokens": None, "sampled_tokens": None, "value_tokens": None}
    return row


def _memoised(prior: Prior) -> Prior:
    """The prior, scored once per set of (prompt, prefix) texts."""
    seen: dict[int, np.ndarray] = {}

    def cached(prompts, texts):
        key = hash((tuple(prompts), tuple(texts)))
        if key not in seen:
            seen[key] = np.asarray(prior(prompts, texts))
        return seen[key]

    return cached


def value_quality(cfg: RunConfig, values: list[Artifact], pool: pd.DataFrame) -> list[dict]:
    """V_k alone and the guidance sum over V_1..V_k, on held-out plain samples.

    Each V_i scores each prefix set once; the sums reuse those scores.
    """
    tokenizer = policy_tokenizer(cfg)
    advantage = pool["reward"] - pool.groupby("prompt_id")["reward"].transform("mean")
    targets = advantage if cfg.value.target == "advantage" else pool["reward"]
    task_prompts = dict(zip(pool["prompt_text"], pool["prompt"], strict=True))
    prior = _memoised(reward_prior(cfg, task_prompts))  # every member reads the same prefixes
    loaded = build_value_ensemble(cfg, [v.file(VALUE_DIR) for v in values], task_prompts)
    ensemble = ValueEnsemble(
        loaded.members, loaded.max_length, loaded.batch_size, prior, loaded.score_dtype
    )
    cache: dict[tuple[int, int], np.ndarray] = {}

    def member(i: int):
        def score(prompts, texts, ended):
            key = (i, hash(tuple(texts)))
            if key not in cache:
                single = ensemble.with_members([ensemble.members[i]])
                cache[key] = single.member_values(prompts, texts, ended)[0]
            return cache[key]

        return score

    def guidance_sum(k: int):
        head = ensemble.with_members(ensemble.members[:k])
        return lambda p, t, e: head.combine([member(i)(p, t, e) for i in range(k)])

    rows = []
    for k in range(0, len(values) + 1):
        if k == 0:  # the reward read on the prefix: what the residual value models start from
            fns = [("reward on the prefix", lambda p, t, e: prior(p, t))]
        else:
            fns = [("V_k", member(k - 1))] + ([("sum V_1..V_k", guidance_sum(k))] if k > 1 else [])
        for label, value_fn in fns:
            quality = prefix_quality(
                value_fn, tokenizer, pool["prompt_id"].tolist(),
                pool["prompt_text"].tolist(), pool["response"].tolist(), pool["ended"].tolist(),
                pool["reward"].to_numpy(), targets.to_numpy(),
            )  # fmt: skip
            rows += [{"iteration": k, "value": label, **asdict(q)} for q in quality]
    return rows


def training_seconds(method: str, training: list[dict]) -> float | None:
    """Seconds of training a method needs before it serves a prompt: iterations 1..k for IRO
    and specrej with V_k, none for best-of-N, ARGS and the reward-guided search; None where the
    run did not record it (VAS and IVL, or iterations recorded without build times)."""
    iro = re.match(r"(?:iro|specrej)-iter(\d+)", method)
    if iro:
        built = [t.get("build_seconds") for t in training[: int(iro.group(1))]]
        return None if None in built else float(sum(built))
    if BEST_OF_N.fullmatch(method) or method in ("args", PRIOR_GUIDED):
        return 0.0
    return None


NOT_MEASURED: dict[str, Any] = {
    **{f"{c}_per_prompt": None for c in PER_PROMPT},
    "cost_prompts": None,
    "training_seconds": None,
    "amortised_training_seconds_per_prompt": None,
}


def method_costs(rows: list[dict], training: list[dict]) -> dict[str, dict[str, Any]]:
    """Per method: each counter per prompt, averaged over the seeds that measured it, the
    prompts it was measured on, and its training seconds, also spread over AMORTISED_OVER
    prompts served."""
    if not rows:
        return {}
    costs = {}
    for method, runs in pd.DataFrame(rows).groupby("method", sort=False):
        per_prompt = runs[list(PER_PROMPT)].astype(float).div(runs["prompts"], axis=0).mean()
        train = training_seconds(method, training)
        costs[method] = {
            **{f"{c}_per_prompt": None if pd.isna(v) else float(v) for c, v in per_prompt.items()},
            "cost_prompts": int(runs["prompts"].max()),
            "training_seconds": train,
            "amortised_training_seconds_per_prompt": (
                None if train is None else train / AMORTISED_OVER
            ),
        }
    return costs


def compute_matches(methods: list[dict]) -> dict[str, str | None]:
    """Each timed method outside best-of-N's family -> the best-of-N at the largest U whose
    seconds per prompt are not above its own; None when every best-of-N took longer."""
    timed = [m for m in methods if m.get("seconds_per_prompt") is not None]
    bon = [m for m in timed if BEST_OF_N.fullmatch(m["method"])]
    matches = {}
    for m in timed:
        if BEST_OF_N.fullmatch(m["method"]):
            continue
        cheaper = [b for b in bon if b["seconds_per_prompt"] <= m["seconds_per_prompt"]]
        matches[m["method"]] = max(cheaper, key=lambda b: b["u"])["method"] if cheaper else None
    return matches


def claim_pairs(columns: list[str]) -> list[tuple[str, str]]:
    """The fixed comparisons the claim rests on, among the methods that ran."""
    iro = sorted(m for m in columns if m.startswith("iro-iter") and "-u" not in m)
    pairs = [(m, "bon-4") for m in iro] + [(m, "bon-16") for m in iro[-1:]]
    if PRIOR_GUIDED in columns:
        pairs += [(PRIOR_GUIDED, "bon-4")] + [(m, PRIOR_GUIDED) for m in iro]
    pairs += [(later, earlier) for earlier, later in itertools.pairwise(iro)]
    pairs += [(m, "bon-16") for m in columns if m.endswith("-u16")]
    largest = f"bon-{max(LARGE_BON_US)}"
    pairs += [(m, largest) for m in columns if m.endswith("-u16") and largest in columns]
    neighbours = [m for m in columns if m.startswith(("vas-", "ivl"))]  # --methods
    pairs += [(m, "base") for m in neighbours] + [(m, "bon-4") for m in neighbours]
    pairs += [(iro[-1], m) for m in neighbours if iro]
    return pairs


def summarise(
    rewards: pd.DataFrame, reference: pd.Series, costs: dict[str, dict] | None = None
) -> tuple[list[dict], list[dict]]:
    """Per-method intervals and costs, and the paired differences: the claim's, and each timed
    method against best-of-N at equal compute, from long-format per-prompt rewards."""
    costs = costs or {}
    rewards = rewards.assign(
        win=lambda d: win_outcomes(d["reward"].to_numpy(), reference.loc[d["prompt_id"]].to_numpy())
    )
    per_prompt = rewards.groupby(["method", "u", "prompt_id"])[["win", "reward"]].mean()
    methods = []
    for (method, u), frame in per_prompt.groupby(level=["method", "u"], sort=False):
        win, reward = paired_bootstrap(frame["win"].to_numpy()), paired_bootstrap(frame["reward"])
        methods.append(
            {
                "method": method, "u": int(u), "prompts": win.prompts,
                "seeds": int(rewards.loc[rewards["method"] == method, "seed"].nunique()),
                "win_rate": win.mean, "win_ci": [win.ci_low, win.ci_high],
                "mean_reward": reward.mean, "reward_ci": [reward.ci_low, reward.ci_high],
                **costs.get(method, NOT_MEASURED),
            }
        )  # fmt: skip
    matches = compute_matches(methods)
    for m in methods:
        if m["method"] in matches:
            m["compute_matched_bon"] = matches[m["method"]]
    wins = per_prompt["win"].droplevel("u").unstack("method")
    matched = [(a, b) for a, b in matches.items() if b is not None]
    pairs = claim_pairs(list(wins.columns))
    pairs += [pair for pair in matched if pair not in pairs]
    rewards_by_method = per_prompt["reward"].droplevel("u").unstack("method")
    differences = []
    for a, b in pairs:
        both = wins[[a, b]].dropna()
        diff = paired_bootstrap((both[a] - both[b]).to_numpy())
        paired = rewards_by_method.loc[both.index, [a, b]]
        reward = paired_bootstrap((paired[a] - paired[b]).to_numpy())
        differences.append(
            {"a": a, "b": b, "win_rate_difference": diff.mean,
             "ci": [diff.ci_low, diff.ci_high], "prompts": diff.prompts,
             "supported": shows_difference(diff.ci_low, diff.ci_high),
             "reward_difference": reward.mean, "reward_ci": [reward.ci_low, reward.ci_high],
             "reward_supported": shows_difference(
                 reward.ci_low, reward.ci_high, scale=1.0, decimals=REWARD_DECIMALS
             ),
             "compute_matched": (a, b) in matched}
        )  # fmt: skip
    return methods, differences


def _error_bars(
    rows: pd.DataFrame, value: str = "win_rate", interval: str = "win_ci", scale: float = 100.0
) -> np.ndarray:
    """Matplotlib's (2, n) distances from each value to its interval's ends (win rate: points)."""
    return scale * np.abs(np.array(rows[interval].tolist()).T - rows[value].to_numpy())


def family(method: str) -> str:
    """The curve a method is drawn on against cost: best-of-N over U, or one method over U."""
    return "best-of-U (U=1: base)" if BEST_OF_N.fullmatch(method) else re.sub(r"-u\d+$", "", method)


def plot_frontier(table: pd.DataFrame, path: str) -> str:
    """Win rate and mean reward against seconds per prompt: best-of-N from U = 1 to 16 draws the
    frontier that a method must lie above to be worth its seconds."""
    import matplotlib.pyplot as plt

    fig, (win_ax, reward_ax) = plt.subplots(1, 2, figsize=(11, 4))
    timed = table.dropna(subset=["seconds_per_prompt"])
    for name, rows in timed.groupby(timed["method"].map(family), sort=False):
        rows = rows.sort_values("seconds_per_prompt")
        seconds = rows["seconds_per_prompt"]
        win_ax.errorbar(seconds, 100 * rows["win_rate"], yerr=_error_bars(rows), marker="o",
                        capsize=3, label=name)  # fmt: skip
        reward_bars = _error_bars(rows, "mean_reward", "reward_ci", scale=1.0)
        reward_ax.errorbar(seconds, rows["mean_reward"], yerr=reward_bars, marker="o", capsize=3)
        for x, y, u in zip(seconds, 100 * rows["win_rate"], rows["u"], strict=True):
            win_ax.annotate(f"U={u}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    for ax, ylabel in ((win_ax, "win rate vs reference (%)"), (reward_ax, "mean reward")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds per prompt (log scale)")
        ax.set_ylabel(ylabel)
    win_ax.legend(fontsize=8)
    fig.suptitle("Quality against cost (95% BCa bootstrap intervals over prompts)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _save(fig, ax, xlabel: str, path: str) -> str:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("win rate vs reference (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(methods: list[dict], out_stem: Path) -> list[str]:
    """Win rate against U (the paper's test-time scaling figure) and against the iteration;
    quality against seconds per prompt where the run measured costs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(methods)
    fig, ax = plt.subplots(figsize=(6, 4))
    bon = table[table["method"].str.match(r"^(base|bon-\d+)$")].sort_values("u")
    ax.errorbar(bon["u"], 100 * bon["win_rate"], yerr=_error_bars(bon), marker="o", capsize=3,
                label="best-of-U (U=1: base)")  # fmt: skip
    shown = ("iro", "specrej", "args", "vas", "ivl", PRIOR_GUIDED)
    for _, row in table[table["method"].str.startswith(shown)].iterrows():
        one = row.to_frame().T
        ax.errorbar([row["u"]], [100 * row["win_rate"]], yerr=_error_bars(one), marker="s",
                    capsize=3, label=row["method"])  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_title("Test-time scaling (95% BCa bootstrap intervals over prompts)")
    scaling = _save(fig, ax, "U: samples per prompt", f"{out_stem}-scaling.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    iro = table[table["method"].str.match(r"^iro-iter\d+$")]
    ks = iro["method"].str.extract(r"(\d+)")[0].astype(int)
    ax.errorbar(ks, 100 * iro["win_rate"], yerr=_error_bars(iro), marker="s", capsize=3,
                label="IRO, U=4")  # fmt: skip
    for name, style in (("bon-4", "--"), ("bon-16", ":")):
        rate = table.loc[table["method"] == name, "win_rate"]
        if len(rate):
            ax.axhline(100 * rate.iloc[0], linestyle=style, color="gray", label=name)
    ax.set_xticks(sorted(ks))
    plots = [scaling, _save(fig, ax, "IRO iteration", f"{out_stem}-iterations.png")]
    if table["seconds_per_prompt"].notna().any():
        plots.append(plot_frontier(table, f"{out_stem}-frontier.png"))
    return plots


def _reward_text(x: float, sign: str = "") -> str:
    return f"{x:{sign}.{REWARD_DECIMALS}f}"


def _yes(shown: bool) -> str:
    return "yes" if shown else "no"


def _difference_cells(d: dict[str, Any]) -> str:
    """A paired difference's table cells: win rate, interval, supported, then the same in reward."""
    return (
        f"{points(d['win_rate_difference'])} pts | [{points(d['ci'][0])}, {points(d['ci'][1])}] "
        f"| {_yes(d['supported'])} | {_reward_text(d['reward_difference'], '+')} | "
        f"[{_reward_text(d['reward_ci'][0], '+')}, {_reward_text(d['reward_ci'][1], '+')}] | "
        f"{_yes(d['reward_supported'])}"
    )


def _or_not_measured(value: float | None, spec: str) -> str:
    return "not measured" if value is None else f"{value:{spec}}"


def cost_lines(methods: list[dict]) -> list[str]:
    """The cost table: what each method's own decoding spends per prompt, and its training."""
    if all(m.get("seconds_per_prompt") is None for m in methods):
        return ["Cost per prompt: not measured in this run.", ""]
    lines = [
        "Cost per prompt of each method's own decoding, its final reward pick included, averaged "
        "over seeds (`iro.core.cost`): seconds of wall time; policy tokens, the positions the "
        "policy's forward passes computed (prefixes less what the prefix cache served, then the "
        "sampled tokens fed back); value tokens, those the value models read; reward calls, the "
        "responses, whole or partial, a reward scored. Each run starts from a cold prefix cache. "
        "Best-of-U was decoded again as best-of-U for its cost; it, IRO at U=16, IRO with l=8 "
        "and specrej were measured on the first prompts only (prompts timed), and so were the "
        "quality of all but best-of-U up to 16. Token-level methods run the policy outside "
        "the engines that count tokens. Value "
        f"training is a one-off: the last column spreads it over {AMORTISED_OVER:,} prompts "
        "served.",
        "",
        "| method | U | seconds | policy tokens | value tokens | reward calls | prompts timed "
        f"| value training (s) | training per prompt over {AMORTISED_OVER:,} prompts (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        lines.append(
            f"| {m['method']} | {m['u']} | {_or_not_measured(m.get('seconds_per_prompt'), '.3g')} | "
            f"{_or_not_measured(m.get('policy_tokens_per_prompt'), ',.0f')} | "
            f"{_or_not_measured(m.get('value_tokens_per_prompt'), ',.0f')} | "
            f"{_or_not_measured(m.get('reward_calls_per_prompt'), '.1f')} | "
            f"{_or_not_measured(m.get('cost_prompts'), 'd')} | "
            f"{_or_not_measured(m.get('training_seconds'), '.0f')} | "
            f"{_or_not_measured(m.get('amortised_training_seconds_per_prompt'), '.3f')} |"
        )
    return [*lines, ""]


def compute_matched_lines(methods: list[dict], differences: list[dict]) -> list[str]:
    """Each method against best-of-N at the largest U its seconds per prompt pay for."""
    matched = {
        m["method"]: m.get("compute_matched_bon") for m in methods if "compute_matched_bon" in m
    }
    if not matched:
        return ["Comparisons at equal compute: not measured in this run.", ""]
    seconds = {m["method"]: m.get("seconds_per_prompt") for m in methods}
    lines = [
        "At equal compute: each method against best-of-N at the largest U whose seconds per "
        "prompt are not above its own, paired on the prompts both decoded.",
        "",
        "| comparison | seconds per prompt | win-rate difference | 95% interval | supported | "
        "mean-reward difference | 95% interval | supported |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in differences:
        if d.get("compute_matched"):
            lines.append(
                f"| {d['a']} − {d['b']} | {seconds[d['a']]:.3g} vs {seconds[d['b']]:.3g} | "
                f"{_difference_cells(d)} |"
            )
    lines += [
        f"- {method} ({seconds[method]:.3g} s per prompt) is faster than every best-of-N "
        "measured: no comparison at equal compute."
        for method, bon in matched.items()
        if bon is None
    ]
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# IRO vs best-of-N ({result['size']}, {result['split']} prompts)",
        "",
        f"{result['prompts']} held-out prompts, decoding seeds {result['seeds']}, value models "
        f"trained once (seed {result['train_seed']}); {result['seconds']:.0f} s in all. "
        f"Intervals: 95% BCa bootstrap over prompts ({BOOTSTRAP_RESAMPLES:,} resamples; a "
        "difference resamples its two methods' prompts together), each prompt's outcome "
        "averaged over seeds."
        + (
            ""
            if result.get("complete", True)
            else " **Partial: the run stopped before its "
            "last seeds; these are the seeds it finished.**"
        ),
        "",
        "| method | U | win rate vs reference | 95% interval | mean reward | 95% interval |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in result["methods"]:
        lines.append(
            f"| {m['method']} | {m['u']} | {points(m['win_rate'])}% | [{points(m['win_ci'][0])}, "
            f"{points(m['win_ci'][1])}] | {_reward_text(m['mean_reward'])} | "
            f"[{_reward_text(m['reward_ci'][0])}, {_reward_text(m['reward_ci'][1])}] |"
        )
    lines += [
        "",
        "| comparison | win-rate difference | 95% interval | supported | mean-reward difference "
        "| 95% interval | supported |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in result["differences"]:
        lines.append(f"| {d['a']} − {d['b']} | {_difference_cells(d)} |")
    lines += [
        "",
        "Supported: the 95% interval, as printed above, lies wholly above or wholly below zero "
        f"(win rate in points to {PERCENT_DECIMALS} decimal, mean reward to {REWARD_DECIMALS} "
        "decimals; an end that prints as 0.0 touches zero). No: the interval touches or spans "
        "zero, so this run shows no difference either way; that is not evidence that the two "
        "are equal, nor that either is at least as good as the other.",
        "",
        *cost_lines(result["methods"]),
        *compute_matched_lines(result["methods"], result["differences"]),
        "Value quality on held-out plain samples, each prompt's first 4 draws (pairwise "
        "accuracy: share of a prompt's "
        "candidate pairs that V at the prefix orders as the final reward does; 0.5 = chance):",
        "",
        "| iteration | value | prefix tokens | pairwise accuracy | Spearman | RMSE | RMSE of a constant |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for q in result["value_quality"]:
        lines.append(
            f"| {q['iteration']} | {q['value']} | {q['prefix_tokens']} | "
            f"{q['pairwise_accuracy']:.3f} | {q['spearman']:.3f} | {q['rmse']:.4f} | "
            f"{q['rmse_constant']:.4f} |"
        )
    lines += ["", "Training per iteration:", ""]
    for t in result["training"]:
        v = t["value_training"]
        built = f" (built in {t['build_seconds']} s)" if "build_seconds" in t else ""
        lines.append(
            f"- iteration {t['iteration']}: {t['seconds']} s in this run{built}, rollout reward "
            f"{t['rollout_reward_mean']:.4f}, value loss {v['first_logged_loss']:.3f} → "
            f"{v['last_logged_loss']:.3f} (standardised; a constant scores 0.5), "
            f"{int(v['examples'])} rows"
        )
    lines += ["", *[f"![plot]({Path(p).name})" for p in result["plots"]], ""]
    return "\n".join(lines)


def evaluation_prompts(cfg: RunConfig, split: str) -> pd.DataFrame:
    """The held-out test prompts, or (for tuning) training prompts no iteration uses."""
    if split == "validation":
        used = cfg.iterations * cfg.data.prompts_per_iteration
        train = load_prompts(cfg.data, cfg.data.train_split)
        if used + cfg.data.eval_prompts > len(train):
            raise ValueError(f"no {cfg.data.eval_prompts} unused training prompts for validation")
        return validation_slice(train, cfg.data.eval_prompts, cfg.seed)
    return eval_slice(load_prompts(cfg.data, cfg.data.eval_split), cfg.data.eval_prompts)


def reference_rewards(cfg: RunConfig, prompts: pd.DataFrame) -> pd.Series:
    """Each prompt's reference reward, by prompt id: what a win is measured against."""
    reward = build_run_reward(cfg)
    scores = reward.score(prompts["prompt"].tolist(), prompts["reference"].tolist())
    return pd.Series(scores, index=prompts["id"].to_numpy())


def publish(
    result: dict[str, Any], rewards: pd.DataFrame, reference: pd.Series, stem: Path
) -> dict[str, Any]:
    """`result` with the methods, differences and plots of `rewards` and of the costs `result`
    recorded, written as <stem>.json/.md."""
    costs = method_costs(result.get("costs", []), result["training"])
    methods, differences = summarise(rewards, reference, costs)
    methods.sort(
        key=lambda m: (
            m["method"].startswith(("iro", "specrej", PRIOR_GUIDED, "vas", "ivl")),
            m["method"] == "args",
            m["u"],
        )
    )
    result = {**result, "methods": methods, "differences": differences}
    stem.parent.mkdir(parents=True, exist_ok=True)
    result["plots"] = plot(methods, stem)
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), markdown(result))
    return result


def resummarise(path: Path) -> dict[str, Any]:
    """A finished run's report again, from the per-prompt rewards stored beside its .json.

    Only the reference summaries are scored again; a different mean from the run's own means the
    reward or the data changed, and the run's rewards would no longer be comparable.
    """
    result = json.loads(path.read_text())
    cfg = parse_config(result["config"], str(path))
    reference = reference_rewards(cfg, evaluation_prompts(cfg, result["split"]))
    if not math.isclose(reference.mean(), result["reference_mean_reward"], abs_tol=1e-9):
        raise ValueError(
            f"reference mean reward {reference.mean():.6f} is not the run's "
            f"{result['reference_mean_reward']:.6f}: the reward or the data changed"
        )
    stem = path.with_suffix("")
    rewards = pd.read_csv(stem.with_name(f"{stem.name}-rewards.csv"), dtype={"prompt_id": str})
    return publish(result, rewards, reference, stem)


def run(
    size: str,
    config: str,
    overrides: dict[str, Any],
    out_dir: Path,
    split: str = "test",
    methods: tuple[str, ...] = (),
    **spec_changes: Any,
) -> dict[str, Any]:
    started = time.time()
    spec = {**SIZES[size], **{k: v for k, v in spec_changes.items() if v is not None}}
    cfg = load_config(config, {**spec["overrides"], "run_name": f"bench-{size}", **overrides})
    pipeline = Pipeline(cfg)
    values, training = train_iterations(pipeline)
    value_dirs = [v.file(VALUE_DIR) for v in values]
    t0 = time.time()
    guides = neighbour_guides(cfg, list(methods))
    timings = {"neighbour-training": time.time() - t0} if guides else {}

    prompts = evaluation_prompts(cfg, split)
    reference = reference_rewards(cfg, prompts)
    subset = prompts.head(spec["cost_prompts"])  # best-of-U timed alone, IRO at U = 16, specrej
    long_rows, costs, quality = [], [], []

    def add(method: str, u: int, seed: int, rewards: pd.Series) -> None:
        long_rows.extend(
            {"method": method, "u": u, "seed": seed, "prompt_id": p, "reward": float(r)}
            for p, r in rewards.items()
        )

    def spend(method: str, seed: int, prompts_run: int, cost: Cost, token_level=False) -> None:
        costs.append(cost_row(method, seed, prompts_run, cost, token_level))

    # iro_vs_bon-<size>[-<split>][-<config>]: the demo's held-out results keep the plain name
    suffixes = [size] + ([split] if split != "test" else [])
    suffixes += [Path(config).stem] if Path(config).stem != "demo" else []
    stem = out_dir / f"iro_vs_bon-{'-'.join(suffixes)}"

    def write(seeds_done: list[int]) -> dict[str, Any]:
        """The results so far: rewritten after every seed, so a stopped run keeps what it did."""
        run_facts = {
            "size": size,
            "split": split,
            "config": cfg.model_dump(mode="json"),
            "prompts": len(prompts),
            "seeds": seeds_done,
            "complete": seeds_done == list(spec["seeds"]),
            "train_seed": cfg.seed,
            "training": training,
            "value_quality": quality,
            "reference_mean_reward": float(reference.mean()),
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "costs": costs,
            "seconds": time.time() - started,
        }
        # per prompt and seed, first: what --resummarise reads, and other comparisons need
        rows = pd.DataFrame(long_rows).to_csv(index=False, float_format="%.6g")
        stem.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stem.with_name(f"{stem.name}-rewards.csv"), rows)
        return publish(run_facts, pd.DataFrame(long_rows), reference, stem)

    u = cfg.search.budget_u
    last = len(values)
    wide = with_search(cfg, *WIDE)
    coarse = with_chunk(cfg, COARSE_CHUNK)
    rejecting = with_rejection(cfg, *REJECTION)
    # guided by the last iteration's value models, on the cost prompts only
    on_subset = [
        (f"iro-iter{last}-u{wide.search.budget_u}", wide, "iro"),
        (f"iro-iter{last}-l{COARSE_CHUNK}-u{u}", coarse, "iro"),
        (f"specrej-iter{last}-u{samples_per_prompt(rejecting, 'specrej')}", rejecting, "specrej"),
    ]
    for index, seed in enumerate(spec["seeds"]):
        eval_seed = EVAL_SEED_BASE + 1000 * seed
        t0 = time.time()
        pool = sample_pool(cfg, prompts, eval_seed)
        for (method, pool_u), rewards in pool_methods(pool).items():
            add(method, pool_u, seed, rewards)
        timings[f"seed{seed}-samples"] = time.time() - t0
        if seed == spec["seeds"][0]:
            quality = value_quality(cfg, values, pool[pool["candidate"] < QUALITY_CANDIDATES])
        for label, cost in best_of_u_costs(cfg, subset, eval_seed).items():
            spend(label, seed, len(subset), cost)
        for (label, large_u), (rewards, cost) in large_best_of(cfg, subset, eval_seed).items():
            add(label, large_u, seed, rewards)
            spend(label, seed, len(subset), cost)
        for k in range(1, len(values) + 1):
            rewards, cost = decoded(cfg, prompts, "iro", value_dirs[:k], eval_seed)
            add(f"iro-iter{k}", u, seed, rewards)
            spend(f"iro-iter{k}", seed, len(prompts), cost)
        rewards, cost = prior_guided(cfg, prompts, eval_seed)
        add(PRIOR_GUIDED, u, seed, rewards)
        spend(PRIOR_GUIDED, seed, len(prompts), cost)
        for label, method_cfg, method in on_subset:
            rewards, cost = decoded(method_cfg, subset, method, value_dirs, eval_seed)
            add(label, samples_per_prompt(method_cfg, method), seed, rewards)
            spend(label, seed, len(subset), cost)
        for label, (guide_cfg, guide_dir) in guides.items():  # token by token, all prompts
            method = label.split("-")[0]
            rewards, cost = decoded(guide_cfg, prompts, method, [guide_dir], eval_seed)
            add(label, 1, seed, rewards)
            spend(label, seed, len(prompts), cost, token_level=True)
        if spec["args_prompts"] and seed == spec["seeds"][0]:  # token by token: slow on a CPU
            head = prompts.head(spec["args_prompts"])
            rewards, cost = decoded(cfg, head, "args", [], eval_seed)
            add("args", 1, seed, rewards)
            spend("args", seed, len(head), cost, token_level=True)
        log.info("seed %d done after %.0f s", seed, time.time() - started)
        result = write(list(spec["seeds"][: index + 1]))

    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="quick")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, nargs="+", help="decoding seeds (default: the size's)")
    parser.add_argument("--args-prompts", type=int, help="ARGS on this many prompts (0: skip)")
    parser.add_argument(
        "--cost-prompts",
        type=int,
        help="time best-of-U, and run IRO at U=16, IRO with l=8 and specrej, on this many prompts",
    )
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="validation: unused training prompts, for tuning without the held-out split",
    )
    parser.add_argument(
        "--resummarise",
        type=Path,
        metavar="RESULT_JSON",
        help="recompute a finished run's report from its stored per-prompt rewards, then stop",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[],
        choices=["vas", "ivl"],
        help="also train and evaluate these neighbours (token by token: slower on a CPU)",
    )
    args = parser.parse_args()
    if args.args_prompts == 1:
        parser.error("--args-prompts: an interval needs at least 2 prompts (0 skips ARGS)")
    if args.cost_prompts is not None and args.cost_prompts < 2:
        parser.error("--cost-prompts: an interval needs at least 2 prompts")
    prepare_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.resummarise:
        print(markdown(resummarise(args.resummarise)))
        return
    overrides = dict(parse_override(p) for p in args.set)
    result = run(
        args.size, args.config, overrides, args.out, args.split, tuple(args.methods),
        seeds=tuple(args.seeds) if args.seeds else None, args_prompts=args.args_prompts,
        cost_prompts=args.cost_prompts,
    )  # fmt: skip
    print(markdown(result))


if __name__ == "__main__":
    main()
