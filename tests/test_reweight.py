import numpy as np
import pandas as pd
import pytest

from iro.valuefn.reweight import effective_sample_size, reweight, softmax_weights


def candidates(rewards_per_prompt: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"prompt_id": pid, "candidate": i, "reward": r}
        for pid, rewards in rewards_per_prompt.items()
        for i, r in enumerate(rewards)
    ]
    return pd.DataFrame(rows)


def test_softmax_weights_match_definition():
    rewards = np.array([0.1, 0.5, 0.2])
    expected = np.exp(rewards / 0.5) / np.exp(rewards / 0.5).sum()
    np.testing.assert_allclose(softmax_weights(rewards, 0.5), expected)


def test_softmax_weights_are_stable_for_large_rewards():
    weights = softmax_weights(np.array([1000.0, 1001.0]), 1.0)
    assert np.isfinite(weights).all() and weights.sum() == pytest.approx(1.0)


def test_ess_uniform_and_degenerate():
    assert effective_sample_size(np.full(4, 0.25)) == pytest.approx(4.0)
    assert effective_sample_size(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    # (sum w)^2 / sum w^2 for w = (0.5, 0.25, 0.25) is 1 / 0.375
    assert effective_sample_size(np.array([0.5, 0.25, 0.25])) == pytest.approx(1 / 0.375)


def test_argmax_keeps_best_and_first_on_ties():
    table, metrics = reweight(
        candidates({"a": [0.1, 0.9, 0.9], "b": [0.3, 0.2]}), "argmax", 1.0, 1, 0
    )
    assert table.set_index("prompt_id")["candidate"].to_dict() == {"a": 1, "b": 0}
    assert (table["weight"] == 1.0).all()
    assert metrics["training_rows"] == 2


def test_softmax_resampling_frequencies_follow_weights():
    rewards = [0.0, 1.0, 2.0]
    table, _ = reweight(candidates({"a": rewards}), "softmax", 1.0, 20000, seed=3)
    frequencies = table["candidate"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(frequencies, softmax_weights(np.array(rewards), 1.0), atol=0.015)


def test_softmax_resampling_is_seeded():
    data = candidates({"a": [0.0, 1.0, 2.0], "b": [1.0, 1.0]})
    first, _ = reweight(data, "softmax", 1.0, 5, seed=7)
    second, _ = reweight(data, "softmax", 1.0, 5, seed=7)
    pd.testing.assert_frame_equal(first, second)


def test_weighted_keeps_all_with_mean_weight_one_per_prompt():
    table, metrics = reweight(
        candidates({"a": [0.0, 1.0, 3.0], "b": [2.0, 2.0]}), "weighted", 2.0, 1, 0
    )
    assert len(table) == 5
    assert table.groupby("prompt_id")["weight"].mean().to_numpy() == pytest.approx([1.0, 1.0])
    assert table[table.prompt_id == "b"]["weight"].tolist() == pytest.approx([1.0, 1.0])
    # prompt b is uniform (ESS 2); prompt a has ESS < 3
    assert metrics["ess_min"] < 3 and metrics["ess_mean"] == pytest.approx(
        (effective_sample_size(softmax_weights(np.array([0.0, 1.0, 3.0]), 2.0)) + 2) / 2
    )


@pytest.mark.parametrize("scheme", ["argmax", "softmax", "weighted"])
def test_every_kept_row_carries_its_prompts_mean_reward_over_all_candidates(scheme):
    table, _ = reweight(candidates({"a": [0.0, 1.0, 2.0], "b": [4.0]}), scheme, 1.0, 2, seed=0)
    by_prompt = table.groupby("prompt_id")["prompt_mean_reward"].unique()
    assert by_prompt["a"].tolist() == [1.0] and by_prompt["b"].tolist() == [4.0]


def test_empty_and_unknown_scheme():
    with pytest.raises(ValueError, match="empty"):
        reweight(candidates({}).reindex(columns=["prompt_id", "reward"]), "argmax", 1.0, 1, 0)
    with pytest.raises(ValueError, match="unknown reweighting scheme"):
        reweight(candidates({"a": [1.0]}), "best", 1.0, 1, 0)
