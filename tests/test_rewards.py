import numpy as np
import pytest

from iro.reward import (
    EmbeddingSimilarity,
    LengthPenalty,
    Reward,
    RewardError,
    WeightedSum,
    build_reward,
)


class Fixed(Reward):
    def __init__(self, name, values):
        self.name, self.values = name, values

    def score(self, prompts, responses):
        return np.array(self.values, dtype=float)


def test_length_penalty():
    scores = LengthPenalty(target_words=3, per_word=0.1).score(["p"] * 3, ["a b", "a b c d e", ""])
    np.testing.assert_allclose(scores, [0.0, -0.2, 0.0])


def test_weighted_sum_keeps_components():
    total, parts = WeightedSum(
        [(Fixed("x", [1, 2]), 1.0), (Fixed("y", [10, 20]), 0.5)]
    ).score_components(["p", "q"], ["a", "b"])
    np.testing.assert_allclose(total, [6, 12])
    assert set(parts) == {"x", "y"}


def test_nan_or_inf_score_names_the_row():
    with pytest.raises(RewardError, match=r"reward 'y' returned nan for row 1"):
        WeightedSum([(Fixed("y", [0.0, float("nan")]), 1.0)]).score(["p", "q"], ["a", "b"])
    with pytest.raises(RewardError, match="shape"):
        WeightedSum([(Fixed("y", [0.0]), 1.0)]).score(["p", "q"], ["a", "b"])


def test_build_reward_names_bad_options():
    with pytest.raises(ValueError, match=r"length_penalty.*bad options"):
        build_reward([("length_penalty", 1.0, {"target": 3})])


def test_embedding_similarity_with_the_shipped_minilm():
    reward = EmbeddingSimilarity()
    doc = (
        "Return the number of items in a container. The argument may be a sequence or a collection."
    )
    scores = reward.score(
        [doc] * 3, ["Return the number of items.", "A recipe for banana bread.", "  "]
    )
    assert scores[0] > scores[1] + 0.2
    assert scores[2] == 0.0


def test_embedding_similarity_reuses_document_embeddings_and_bounds_them(monkeypatch):
    import iro.reward.embedding as embedding

    monkeypatch.setattr(embedding, "PROMPT_CACHE_SIZE", 2)
    reward = EmbeddingSimilarity()
    docs = ["Return the number of items.", "Open a file for reading.", "Sort a list in place."]
    first = reward.score(docs, ["items counted"] * 3)
    embedded = []
    real_embed = reward._embed
    monkeypatch.setattr(reward, "_embed", lambda texts: embedded.extend(texts) or real_embed(texts))
    again = reward.score(docs[1:], ["items counted"] * 2)
    np.testing.assert_allclose(again, first[1:], atol=1e-6)
    assert embedded == ["items counted"] * 2  # the two latest documents came from the cache
    reward.score(docs[:1], ["items counted"])
    assert embedded[2] == docs[0]  # the oldest was dropped to keep 2
