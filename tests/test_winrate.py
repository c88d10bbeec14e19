"""Win-rate math, verdict parsing and the reward-model report, without any server."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from iro.core.config import ReportConfig
from iro.core.stats import (
    BOOTSTRAP_RESAMPLES,
    Z_95,
    paired_bootstrap,
    reward_outcomes,
    shows_difference,
    summarize,
    wilson_interval,
    win_outcomes,
)
from iro.reports.judge import PROMPTS, pair_outcome, parse_verdict
from iro.reports.run import ReportError, build_report, latest_run
from tests.report_helpers import make_run


def test_ties_count_half_and_failures_stay_out_of_the_rate():
    rate = summarize([1, 1, 0, -1, None, None])
    assert (rate.wins, rate.ties, rate.losses, rate.failures) == (2, 1, 1, 2)
    assert rate.win_rate == pytest.approx(2.5 / 4)
    assert rate.ci_low < rate.win_rate < rate.ci_high


def test_only_failures_give_no_win_rate():
    rate = summarize([None, None, None])
    assert rate.failures == 3 and rate.win_rate is None and rate.ci_low is None


def test_wilson_interval_matches_the_closed_form_and_stays_in_bounds():
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = wilson_interval(1.0, 5)  # all wins on few prompts: not a point
    assert high == 1.0 and 0.5 < low < 0.6


def test_bad_outcome_is_rejected():
    with pytest.raises(ValueError, match="outcome"):
        summarize([2])


def test_reward_outcomes_compare_per_prompt():
    assert reward_outcomes([1.0, 0.5, 0.2], [0.5, 0.5, 0.3]) == [1, 0, -1]
    with pytest.raises(ValueError, match="finite"):
        reward_outcomes([math.nan], [0.0])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Comparison: A is shorter.\nPreferred: A", "A"),
        ('Comparison: x\n**Preferred:** "B"', "B"),
        ("preferred: b", "B"),
        ("Preferred: A\nPreferred: B", None),  # contradictory
        ("A: A\nB: B", None),
        ("I like summary A", None),  # no verdict line: a failure, not a guess
        (None, None),
    ],
)
def test_parse_summary_verdict(answer, expected):
    assert parse_verdict(answer, PROMPTS["summary"].verdict_label) == expected


def test_parse_dialogue_verdict():
    assert parse_verdict("Comparison: ...\nMore helpful: B", "More helpful") == "B"


def test_both_orders_decide_the_outcome():
    assert pair_outcome("A", "B") == 1  # method preferred in both positions
    assert pair_outcome("B", "A") == -1
    assert pair_outcome("A", "A") == 0  # position bias: a tie
    assert pair_outcome(None, "B") is None


def test_prompt_versions_differ_and_name_the_kind():
    assert PROMPTS["summary"].version.startswith("dpo-summary-")
    assert PROMPTS["summary"].version != PROMPTS["dialogue"].version


def test_reward_report_is_a_versioned_artifact(tmp_path):
    store = make_run(tmp_path / "store")
    report = build_report(store, "demo", ReportConfig(baseline="reference"))
    table = report.table().set_index("method")
    # reward = -length: iro-iter1 is shorter than the reference on 1 prompt of 4, base on 3
    assert table.loc["iro-iter1", "win_rate"] == 0.25
    assert table.loc["base", "wins"] == 3 and table.loc["base", "losses"] == 1
    assert "win rates against reference" in report.file("summary.md").read_text()
    assert build_report(store, "demo", ReportConfig(baseline="reference")).id == report.id
    other = build_report(store, "demo", ReportConfig(baseline="base"))
    assert other.id != report.id
    assert list(other.table()["method"]) == ["iro-iter1"]


def test_report_names_what_is_missing(tmp_path):
    store = make_run(tmp_path / "store")
    with pytest.raises(ReportError, match="not an evaluated method"):
        build_report(store, "demo", ReportConfig(baseline="bon-9"))
    with pytest.raises(ReportError, match="no evaluation table"):
        build_report(store, "nope", ReportConfig())
    assert latest_run(store) == "demo"


def test_reward_win_rate_counts_ties_half_and_equal_rewards_as_ties():
    from iro.core.stats import reward_win_rate

    rate = reward_win_rate([1.0, 0.5, 0.2, 0.7], [0.5, 0.5, 0.3, 0.7])
    assert (rate.wins, rate.ties, rate.losses) == (1, 2, 1)
    assert rate.win_rate == 0.5 and rate.ci_low < 0.5 < rate.ci_high
    assert rate.interval == "wilson-95"
    all_equal = reward_win_rate([0.3, 0.3], [0.3, 0.3])
    assert all_equal.win_rate == 0.5 and all_equal.ties == 2


def test_reward_win_rate_of_no_prompts_is_no_rate():
    from iro.core.stats import reward_win_rate

    rate = reward_win_rate([], [])
    assert rate.win_rate is None and rate.ci_low is None and rate.valid == 0


def test_paired_bootstrap_covers_the_mean_and_excludes_zero_only_for_a_clear_difference():
    clear = paired_bootstrap(np.full(50, 0.3) + np.linspace(-0.1, 0.1, 50))
    assert clear.ci_low <= clear.mean <= clear.ci_high and clear.ci_low > 0
    noise = paired_bootstrap(np.tile([1.0, -1.0], 25))
    assert noise.mean == 0 and noise.ci_low < 0 < noise.ci_high
    assert paired_bootstrap(np.arange(10.0), seed=3) == paired_bootstrap(np.arange(10.0), seed=3)
    assert win_outcomes([1.0, 0.5, 0.0], [0.5, 0.5, 0.5]).tolist() == [1.0, 0.5, 0.0]


def test_the_paired_bootstrap_is_scipys_paired_bca_and_has_the_normal_width_on_normal_data():
    # 200 prompts share a large per-prompt effect; the methods differ by 0.1 plus small noise
    rng = np.random.default_rng(5)
    baseline = rng.normal(0.0, 1.0, 200)
    method = baseline + 0.1 + rng.normal(0.0, 0.05, 200)
    result = paired_bootstrap(method - baseline)
    paired = scipy.stats.bootstrap(
        (method, baseline),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        paired=True,
        method="BCa",
        n_resamples=BOOTSTRAP_RESAMPLES,
        rng=np.random.default_rng(0),
    )
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(paired.confidence_interval))
    # for a mean of near-normal values BCa is close to mean +- 1.96 s / sqrt(n) (~0.0069 here),
    # far narrower than the unpaired spread of the per-prompt effect (~0.28) would give
    half_width = Z_95 * np.std(method - baseline, ddof=1) / math.sqrt(200)
    assert (result.ci_high - result.ci_low) / 2 == pytest.approx(half_width, rel=0.1)
    assert result.ci_low < result.mean < result.ci_high and result.ci_low > 0


def test_the_bootstrap_interval_of_a_skewed_mean_is_close_to_the_exact_one():
    # the mean of n exponential values has an exact interval: 2 n mean / theta ~ chi2(2 n). Over
    # 40 samples of 50, BCa's ends are off by +0.001 / -0.029 on average, percentiles' by
    # -0.023 / -0.066: percentiles sit too low for a right-skewed mean.
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(40):
        values = rng.exponential(1.0, 50)
        exact = 2 * 50 * values.mean() / scipy.stats.chi2.ppf([0.975, 0.025], 2 * 50)
        result = paired_bootstrap(values)
        errors.append([result.ci_low - exact[0], result.ci_high - exact[1]])
    low_error, high_error = np.mean(errors, axis=0)
    assert abs(low_error) < 0.01 and abs(high_error) < 0.045


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_equal_values_give_their_own_point_as_the_interval_without_a_warning(value):
    # every resample has the same mean, and BCa's corrections are 0/0 there (scipy gives NaN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = paired_bootstrap(np.full(120, value))
    assert (result.mean, result.ci_low, result.ci_high) == (value, value, value)


def test_all_ties_between_two_methods_show_no_difference():
    ties = paired_bootstrap(np.zeros(120))
    assert not shows_difference(ties.ci_low, ties.ci_high)


@pytest.mark.parametrize(
    ("values", "message"),
    [([], "at least two"), ([0.5], "at least two"), ([0.5, math.nan], "finite")],
)
def test_a_bootstrap_needs_two_finite_values(values, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(np.array(values))


@pytest.mark.parametrize(
    ("ci_low", "ci_high", "shown"),
    [
        (5.551115123125783e-18, 0.094, False),  # zero up to rounding: prints as 0.0
        (0.0004, 0.094, False),  # 0.04 points: prints as 0.0
        (0.0006, 0.094, True),  # 0.06 points: prints as 0.1
        (0.0139, 0.1, True),
        (-0.0194, 0.0778, False),  # spans zero: not shown to differ, not "at least as good"
        (-0.164, -5.551115123125783e-18, False),
        (-0.164, -0.0006, True),
    ],
)
def test_a_difference_is_shown_only_when_its_printed_interval_excludes_zero(ci_low, ci_high, shown):
    assert shows_difference(ci_low, ci_high) is shown


def test_a_reward_difference_is_judged_at_its_own_printed_precision():
    assert not shows_difference(0.00004, 0.05, scale=1.0, decimals=4)  # prints as +0.0000
    assert shows_difference(0.00006, 0.05, scale=1.0, decimals=4)  # prints as +0.0001
