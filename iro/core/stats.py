"""Win rates with a 95% confidence interval, from per-prompt outcomes, and what an interval shows.

An outcome is +1 (method wins), 0 (tie) or -1 (baseline wins); a tie counts half a win. The
interval is Wilson's score interval on that rate: unlike the normal approximation it stays
inside [0, 1] and does not collapse to a point when every pair goes one way on a few prompts.
Failures are counted beside the rate and never enter it: with no valid outcome there is no rate.

Means over prompts (and paired differences of them) get a BCa bootstrap interval instead, and
`shows_difference` is the one rule that reads a difference's interval as a claim.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

Z_95 = 1.959963984540054
PERCENT_DECIMALS = 1  # rates and their differences are printed in percent with one decimal
# enough resamples that the printed ends (0.1 points) no longer move with the resampling seed
BOOTSTRAP_RESAMPLES = 20_000


@dataclass(frozen=True)
class WinRate:
    wins: int
    ties: int
    losses: int
    failures: int
    win_rate: float | None  # None when no outcome was valid
    ci_low: float | None
    ci_high: float | None
    interval: str = "wilson-95"  # how ci_low..ci_high was computed

    @property
    def valid(self) -> int:
        return self.wins + self.ties + self.losses


def wilson_interval(rate: float, n: int, z: float = Z_95) -> tuple[float, float]:
    if n <= 0:
        raise ValueError("a confidence interval needs at least one outcome")
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    # the interval always holds the rate itself (rounding could put 0 just outside at rate 0)
    return max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half))


def summarize(outcomes: Iterable[int | None]) -> WinRate:
    """Outcomes are +1, 0, -1, or None for a failure (an unparsable or failed judgement)."""
    counts = {1: 0, 0: 0, -1: 0, None: 0}
    for outcome in outcomes:
        if outcome not in counts:
            raise ValueError(f"an outcome must be +1, 0, -1 or None, got {outcome!r}")
        counts[outcome] += 1
    valid = counts[1] + counts[0] + counts[-1]
    if valid == 0:
        return WinRate(0, 0, 0, counts[None], None, None, None)
    rate = (counts[1] + 0.5 * counts[0]) / valid
    low, high = wilson_interval(rate, valid)
    return WinRate(counts[1], counts[0], counts[-1], counts[None], rate, low, high)


def reward_win_rate(method_rewards, baseline_rewards) -> WinRate:
    """The win rate of one method's rewards over a baseline's, prompt by prompt.

    P(reward(method) > reward(baseline)), a tie counting half, with Wilson's 95% interval; the
    evaluation table and the reports use this one function (the benchmark pairs the same
    per-prompt outcomes, `win_outcomes`, across methods instead). No prompts give no rate
    (win_rate None), never a division by zero.
    """
    return summarize(reward_outcomes(method_rewards, baseline_rewards))


def reward_outcomes(method: np.ndarray, baseline: np.ndarray) -> list[int]:
    """Per-prompt sign of reward(method) - reward(baseline): P(method > baseline), ties half."""
    method, baseline = np.asarray(method, float), np.asarray(baseline, float)
    if method.shape != baseline.shape:
        raise ValueError(f"{method.shape} method rewards but {baseline.shape} baseline rewards")
    if not (np.isfinite(method).all() and np.isfinite(baseline).all()):
        raise ValueError("reward win rate needs finite rewards on both sides")
    return np.sign(method - baseline).astype(int).tolist()


@dataclass(frozen=True)
class BootstrapInterval:
    mean: float
    ci_low: float
    ci_high: float
    prompts: int


def paired_bootstrap(
    per_prompt: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapInterval:
    """The mean over prompts of a per-prompt quantity, with a BCa bootstrap interval.

    Resampling prompts (not samples) keeps each prompt's pairing intact: pass the per-prompt
    difference between two methods (averaged over seeds) to compare them on the same prompts,
    which resamples exactly as scipy's `paired=True` does with both methods' values, or one
    method's per-prompt outcome for its own interval. BCa (bias-corrected and accelerated)
    rather than plain percentiles, because a win rate is a bounded, often skewed mean: in a
    simulation of 120 prompts with one seed each, the 95% percentile interval of a 97% win rate
    held the true rate 86% of the time and BCa's 94.5%; for differences the two agree.

    BCa's corrections need spread: where scipy cannot compute them (every value equal, or a
    spread too small for floating point) the interval is the plain percentile interval of the
    same resamples, which for equal values is that value itself. Fewer than two prompts have no
    interval at all.
    """
    values = np.asarray(per_prompt, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError("a bootstrap needs a 1-d array of at least two per-prompt values")
    if not np.isfinite(values).all():
        raise ValueError("a bootstrap needs finite per-prompt values")
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        result = scipy.stats.bootstrap(
            (values,),
            np.mean,
            n_resamples=resamples,
            confidence_level=level,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        tail = (1 - level) / 2
        low, high = np.quantile(result.bootstrap_distribution, [tail, 1 - tail])
    return BootstrapInterval(float(values.mean()), float(low), float(high), len(values))


def shows_difference(
    ci_low: float, ci_high: float, scale: float = 100.0, decimals: int = PERCENT_DECIMALS
) -> bool:
    """Whether a difference's interval shows a difference: both ends on one side of zero.

    The ends are judged as printed, `scale * end` rounded to `decimals` (win-rate differences:
    percentage points with one decimal), so an end within rounding of zero, such as a bootstrap
    quantile of 5.6e-18 printed as 0.0, touches zero. A lower end must be at least 0.05 points
    (an upper end at most -0.05) to count. An interval that touches or spans zero shows neither
    a difference nor its absence: "not shown to differ", never "at least as good".
    """
    return round(scale * ci_low, decimals) > 0 or round(scale * ci_high, decimals) < 0


def win_outcomes(method_rewards, baseline_rewards) -> np.ndarray:
    """Per prompt: 1 if the method's reward is higher, 0.5 on a tie, 0 if lower."""
    return (np.asarray(reward_outcomes(method_rewards, baseline_rewards), dtype=float) + 1) / 2


def points(value: float) -> str:
    """`value` in percent as printed; an end that rounds to zero prints 0.0, never -0.0."""
    return f"{round(100 * value, PERCENT_DECIMALS) + 0.0:.{PERCENT_DECIMALS}f}"


def percent(value: float | None) -> str:
    """A rate as text: 62.5%, or n/a where there is none."""
    return "n/a" if value is None else f"{points(value)}%"


def interval(row: Any) -> str:
    """A row's ci_low/ci_high as text in percent: [50.3, 73.3], or n/a."""
    if row.ci_low is None or row.ci_high is None:
        return "n/a"
    return f"[{points(row.ci_low)}, {points(row.ci_high)}]"
