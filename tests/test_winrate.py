"""Win-rate math, verdict parsing and the reward-model report, without any server."""

from __future__ import annotations

import math

import pytest

from iro.core.config import ReportConfig
from iro.core.stats import reward_outcomes, summarize, wilson_interval
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
    import numpy as np

    from iro.core.stats import paired_bootstrap, win_outcomes

    clear = paired_bootstrap(np.full(50, 0.3) + np.linspace(-0.1, 0.1, 50))
    assert clear.ci_low <= clear.mean <= clear.ci_high and clear.ci_low > 0
    noise = paired_bootstrap(np.tile([1.0, -1.0], 25))
    assert noise.mean == 0 and noise.ci_low < 0 < noise.ci_high
    assert paired_bootstrap(np.arange(10.0), seed=3) == paired_bootstrap(np.arange(10.0), seed=3)
    assert win_outcomes([1.0, 0.5, 0.0], [0.5, 0.5, 0.5]).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(np.array([]))
