"""The benchmark's own arithmetic: best-of-U from one pool of draws, and the paired summary."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from iro.core.config import load_config
from iro.core.stats import BootstrapInterval

SPEC = importlib.util.spec_from_file_location(
    "iro_vs_bon", Path(__file__).parent.parent / "benchmarks" / "iro_vs_bon.py"
)
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_base_is_the_first_draw_and_bon_u_the_best_of_the_first_u():
    rewards = [0.1, 0.5, 0.2, 0.3, 0.9] + [0.0] * 11  # 16 draws of one prompt, in order
    pool = pd.DataFrame({"prompt_id": "p", "candidate": range(16), "reward": rewards})
    methods = bench.pool_methods(pool.sample(frac=1, random_state=0))  # order comes from candidate
    assert methods[("base", 1)]["p"] == 0.1
    assert methods[("bon-4", 4)]["p"] == 0.5
    assert methods[("bon-8", 8)]["p"] == 0.9 and methods[("bon-16", 16)]["p"] == 0.9


REFERENCE = pd.Series([0.5] * 40, index=[f"p{i}" for i in range(40)])


def two_seed_rewards() -> pd.DataFrame:
    """bon-4 loses every prompt, bon-16 wins every one, iro-iter1 wins half, over two seeds."""
    rows = []
    for seed in (0, 1):
        for i, p in enumerate(REFERENCE.index):
            rows.append({"method": "bon-4", "u": 4, "seed": seed, "prompt_id": p, "reward": 0.4})
            rows.append({"method": "bon-16", "u": 16, "seed": seed, "prompt_id": p, "reward": 0.6})
            better = 0.6 if i % 2 == 0 else 0.4
            rows.append(
                {"method": "iro-iter1", "u": 4, "seed": seed, "prompt_id": p, "reward": better}
            )
    return pd.DataFrame(rows)


def test_summary_pairs_methods_on_the_same_prompts_and_averages_seeds():
    methods, differences = bench.summarise(two_seed_rewards(), REFERENCE)
    by_name = {m["method"]: m for m in methods}
    assert by_name["bon-4"]["win_rate"] == 0.0 and by_name["bon-16"]["win_rate"] == 1.0
    assert (
        by_name["iro-iter1"]["win_rate"] == pytest.approx(0.5)
        and by_name["iro-iter1"]["seeds"] == 2
    )
    vs_bon4 = next(d for d in differences if (d["a"], d["b"]) == ("iro-iter1", "bon-4"))
    assert vs_bon4["win_rate_difference"] == pytest.approx(0.5) and vs_bon4["supported"]
    vs_bon16 = next(d for d in differences if (d["a"], d["b"]) == ("iro-iter1", "bon-16"))
    assert vs_bon16["win_rate_difference"] == pytest.approx(-0.5) and vs_bon16["supported"]
    # mean reward, paired the same way: (0.6 + 0.4) / 2 - 0.4 and - 0.6
    assert vs_bon4["reward_difference"] == pytest.approx(0.1)
    assert vs_bon16["reward_difference"] == pytest.approx(-0.1)
    assert vs_bon4["reward_supported"] and vs_bon16["reward_supported"]


def test_an_interval_at_zero_up_to_rounding_supports_no_difference(monkeypatch):
    # the shape of a 95% interval whose lower end is a bootstrap quantile of 5.6e-18: zero
    touching = BootstrapInterval(
        mean=0.047, ci_low=5.551115123125783e-18, ci_high=0.094, prompts=40
    )
    monkeypatch.setattr(bench, "paired_bootstrap", lambda *args, **kwargs: touching)
    _, differences = bench.summarise(two_seed_rewards(), REFERENCE)
    assert differences and not any(d["supported"] or d["reward_supported"] for d in differences)


def test_a_neighbour_is_compared_with_the_base_at_its_own_budget_and_with_best_of_4():
    reference = pd.Series([0.5] * 4, index=[f"p{i}" for i in range(4)])
    rows = [
        {"method": method, "u": u, "seed": 0, "prompt_id": p, "reward": reward}
        for p in reference.index
        for method, u, reward in (
            ("base", 1, 0.4), ("bon-4", 4, 0.6), ("bon-16", 16, 0.6), ("iro-iter1", 4, 0.6),
            ("vas-iter1", 1, 0.6),
        )
    ]  # fmt: skip
    _, differences = bench.summarise(pd.DataFrame(rows), reference)
    pairs = {(d["a"], d["b"]): d["win_rate_difference"] for d in differences}
    assert pairs[("vas-iter1", "base")] == pytest.approx(1.0)
    assert pairs[("vas-iter1", "bon-4")] == pytest.approx(0.0)
    assert pairs[("iro-iter1", "vas-iter1")] == pytest.approx(0.0)


def test_a_partial_run_says_so_and_a_complete_one_does_not():
    result = {
        "size": "quick", "split": "test", "prompts": 2, "seeds": [0], "train_seed": 0,
        "seconds": 1.0, "methods": [], "differences": [], "value_quality": [], "training": [],
        "plots": [],
    }  # fmt: skip
    assert "Partial" not in bench.markdown({**result, "complete": True})
    assert "Partial: the run stopped before its last seeds" in bench.markdown(
        {**result, "complete": False}
    )


def run_facts() -> dict:
    """What a run records beside its per-prompt rewards."""
    return {
        "size": "quick",
        "split": "test",
        "config": load_config("configs/demo.yaml").model_dump(mode="json"),
        "prompts": len(REFERENCE),
        "seeds": [0, 1],
        "complete": True,
        "train_seed": 0,
        "training": [],
        "value_quality": [],
        "timings_s": {},
        "seconds": 1.0,
        "reference_mean_reward": float(REFERENCE.mean()),
    }


def test_the_report_states_the_rule_that_marks_a_difference_supported():
    methods, differences = bench.summarise(two_seed_rewards(), REFERENCE)
    text = bench.markdown(
        {**run_facts(), "methods": methods, "differences": differences, "plots": []}
    )
    assert "BCa bootstrap over prompts" in text
    assert (
        "Supported: the 95% interval, as printed above, lies wholly above or wholly below" in text
    )
    assert "not evidence that the two are equal" in text


def test_resummarise_rebuilds_a_runs_report_from_its_stored_rewards(tmp_path, monkeypatch):
    stem = tmp_path / "iro_vs_bon-quick"
    written = bench.publish(run_facts(), two_seed_rewards(), REFERENCE, stem)
    two_seed_rewards().to_csv(f"{stem}-rewards.csv", index=False)
    flipped = [{**d, "supported": not d["supported"]} for d in written["differences"]]
    stem.with_suffix(".json").write_text(json.dumps({**written, "differences": flipped}))
    monkeypatch.setattr(bench, "evaluation_prompts", lambda cfg, split: None)
    monkeypatch.setattr(bench, "reference_rewards", lambda cfg, prompts: REFERENCE)

    again = bench.resummarise(stem.with_suffix(".json"))
    assert again["differences"] == written["differences"]
    assert json.loads(stem.with_suffix(".json").read_text())["differences"] == again["differences"]
    monkeypatch.setattr(bench, "reference_rewards", lambda cfg, prompts: REFERENCE + 0.1)
    with pytest.raises(ValueError, match="the reward or the data changed"):
        bench.resummarise(stem.with_suffix(".json"))


def timed(method: str, u: int, seconds: float | None) -> dict:
    return {"method": method, "u": u, "seconds_per_prompt": seconds}


def test_each_method_meets_the_best_of_n_at_the_largest_u_its_seconds_pay_for():
    methods = [
        timed("base", 1, 0.1), timed("bon-4", 4, 0.45), timed("bon-8", 8, 0.40),
        timed("bon-16", 16, 1.6), timed("iro-iter1", 4, 0.9), timed("reward-guided", 4, 0.42),
        timed("iro-iter2-u16", 16, 2.0), timed("args", 1, 0.05), timed("vas-iter1", 1, None),
    ]  # fmt: skip
    assert bench.compute_matches(methods) == {
        "iro-iter1": "bon-8",  # bon-16 took longer; bon-8, the largest U below, was faster than 4
        "reward-guided": "bon-8",
        "iro-iter2-u16": "bon-16",
        "args": None,  # faster than every best-of-N: nothing to match
    }  # the untimed method is left out
    assert bench.compute_matches([timed("bon-4", 4, 0.5), timed("iro-iter1", 4, 0.5)]) == {
        "iro-iter1": "bon-4"  # equal seconds are not above
    }


def test_costs_per_prompt_average_the_seeds_and_spread_training_over_served_prompts():
    rows = [
        {"method": "iro-iter2", "seed": seed, "prompts": 10, "seconds": seconds,
         "policy_tokens": 1000, "sampled_tokens": 400, "value_tokens": 300, "reward_calls": 40}
        for seed, seconds in ((0, 2.0), (1, 4.0))
    ] + [
        {"method": "args", "seed": 0, "prompts": 4, "seconds": 2.0, "policy_tokens": None,
         "sampled_tokens": None, "value_tokens": None, "reward_calls": 80}
    ]  # fmt: skip
    training = [{"build_seconds": 100.0}, {"build_seconds": 50.0}, {"build_seconds": 25.0}]
    costs = bench.method_costs(rows, training)
    iro = costs["iro-iter2"]
    assert iro["seconds_per_prompt"] == pytest.approx(0.3)
    assert (iro["policy_tokens_per_prompt"], iro["reward_calls_per_prompt"]) == (100.0, 4.0)
    assert iro["training_seconds"] == 150.0  # iterations 1 and 2
    assert iro["amortised_training_seconds_per_prompt"] == pytest.approx(0.15)
    assert costs["args"]["policy_tokens_per_prompt"] is None
    assert costs["args"]["reward_calls_per_prompt"] == 20.0
    assert costs["args"]["training_seconds"] == 0.0


def five_method_rewards() -> pd.DataFrame:
    """two_seed_rewards, with ARGS and the reward-guided search beside them."""
    extra = [
        {"method": method, "u": u, "seed": seed, "prompt_id": p, "reward": 0.55}
        for method, u in (("args", 1), ("reward-guided", 4))
        for seed in (0, 1)
        for p in REFERENCE.index
    ]
    return pd.concat([two_seed_rewards(), pd.DataFrame(extra)], ignore_index=True)


COSTS = {
    method: {**bench.NOT_MEASURED, "seconds_per_prompt": seconds}
    for method, seconds in (
        ("bon-4", 0.4), ("bon-16", 1.6), ("iro-iter1", 1.0), ("args", 0.5),
        ("reward-guided", 0.1),
    )
}  # fmt: skip


def test_compute_matched_differences_are_marked_and_reported():
    methods, differences = bench.summarise(five_method_rewards(), REFERENCE, COSTS)
    matched = {(d["a"], d["b"]) for d in differences if d["compute_matched"]}
    assert matched == {("iro-iter1", "bon-4"), ("args", "bon-4")}
    assert not any(d["compute_matched"] for d in differences if d["b"] == "bon-16")
    by_name = {m["method"]: m for m in methods}
    assert by_name["iro-iter1"]["compute_matched_bon"] == "bon-4"
    assert by_name["reward-guided"]["compute_matched_bon"] is None
    assert "compute_matched_bon" not in by_name["bon-4"]
    text = bench.markdown(
        {**run_facts(), "methods": methods, "differences": differences, "plots": []}
    )
    assert "| args − bon-4 | 0.5 vs 0.4 |" in text
    assert "reward-guided (0.1 s per prompt) is faster than every best-of-N measured" in text


def test_a_run_recorded_without_costs_reports_them_as_not_measured(tmp_path):
    unmeasured = bench.publish(run_facts(), two_seed_rewards(), REFERENCE, tmp_path / "old")
    assert all(m["seconds_per_prompt"] is None for m in unmeasured["methods"])
    text = (tmp_path / "old.md").read_text()
    assert "Cost per prompt: not measured in this run." in text
    assert "Comparisons at equal compute: not measured in this run." in text
    assert not any(p.endswith("-frontier.png") for p in unmeasured["plots"])

    rows = [
        {"method": method, "seed": 0, "prompts": 40, "seconds": 40 * seconds,
         "policy_tokens": 4000, "sampled_tokens": 2000, "value_tokens": 0, "reward_calls": 160}
        for method, seconds in (("bon-4", 0.4), ("bon-16", 1.6), ("iro-iter1", 1.0))
    ]  # fmt: skip
    measured = bench.publish(
        {**run_facts(), "costs": rows}, two_seed_rewards(), REFERENCE, tmp_path / "new"
    )
    assert any(p.endswith("-frontier.png") for p in measured["plots"])
    assert "| iro-iter1 − bon-4 | 1 vs 0.4 |" in (tmp_path / "new.md").read_text()
