import numpy as np
import pytest

from iro.valuefn.diagnostics import prefix_quality, within_prompt_pairwise_accuracy


def test_a_perfect_ranker_scores_one_and_a_constant_one_half():
    groups = np.array(["a", "a", "a", "b", "b"])
    actual = np.array([0.1, 0.5, 0.3, 2.0, 1.0])
    assert within_prompt_pairwise_accuracy(groups, actual * 10, actual) == (1.0, 4)
    assert within_prompt_pairwise_accuracy(groups, np.zeros(5), actual) == (0.5, 4)
    assert within_prompt_pairwise_accuracy(groups, -actual, actual) == (0.0, 4)


def test_pairs_never_cross_prompts_and_equal_rewards_are_not_pairs():
    groups = np.array(["a", "b"])  # one candidate each: no pair
    assert (
        within_prompt_pairwise_accuracy(groups, np.array([1.0, 0.0]), np.array([0.0, 1.0]))[1] == 0
    )
    tied = within_prompt_pairwise_accuracy(np.array(["a", "a"]), np.array([1.0, 0.0]), np.ones(2))
    assert tied[1] == 0 and np.isnan(tied[0])


def test_prefix_quality_reads_each_prefix_length(tiny_tokenizer):
    seen = []

    def value_fn(prompts, texts, ended):
        seen.append(list(texts))
        return np.array([len(t) for t in texts], dtype=float)  # longer text, higher value

    responses = ["the list of data", "the list", "returns a value"]
    quality = prefix_quality(
        value_fn, tiny_tokenizer, ["p", "p", "p"], ["x"] * 3, responses, [True] * 3,
        rewards=np.array([3.0, 1.0, 2.0]), targets=np.array([3.0, 1.0, 2.0]), prefix_tokens=(1, 8),
    )  # fmt: skip
    assert [q.prefix_tokens for q in quality] == [1, 8]
    assert seen[0] == ["the", "the", "returns"] and seen[1] == responses
    assert quality[0].pairwise_accuracy == pytest.approx(0.5)  # a tie, one right, one wrong
    assert quality[1].pairwise_accuracy == pytest.approx(1.0)
    assert quality[1].rmse_constant == pytest.approx(np.std([3.0, 1.0, 2.0]))
