"""Carrying a residual onto another base: the vocabulary map and transfer of a trained residual."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iro.valuefn.residual import ResidualValueNetwork, guided_log_probs
from iro.valuefn.residual_decoding import decode_with_residual, read_residual
from iro.valuefn.token_guidance import TokenGuidanceSettings
from iro.valuefn.vocab_map import VocabularyMap
from tests.conftest import WORDS, make_causal_lm
from tests.test_ivl import DEMOS, PROMPTS, load_lm, train_tiny_residual

# another word-level vocabulary: other ids, other special tokens, a word the first one lacks,
# and none of the first one's "summary"
OTHER_WORDS = ["report", *reversed([w for w in WORDS if w != "summary"])]


def word_tokenizer(vocab: dict[str, int], **special: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, **special)


def other_tokenizer():
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(OTHER_WORDS)}}
    vocab |= {"[EOS]": len(vocab), "[PAD]": len(vocab) + 1}
    return word_tokenizer(vocab, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")


def make_other_lm(directory: Path, seed: int) -> Path:
    """A tiny Llama like conftest's, on `other_tokenizer`."""
    return make_causal_lm(directory, seed, other_tokenizer())


def demo_nll(base, base_tokenizer, residual=None, residual_tokenizer=None, vocab_map=None):
    """Mean NLL of the DEMOS' response tokens (and EOS) in the base's tokenizer, under the base
    corrected by the residual read in its own tokenizer on the text before each token."""
    losses = []
    for prompt, response in DEMOS:
        prompt_ids = base_tokenizer(prompt, add_special_tokens=False).input_ids
        response_ids = base_tokenizer(response, add_special_tokens=False).input_ids
        targets = [*response_ids, base_tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.no_grad():
            logits = base(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            logits = logits[len(prompt_ids) - 1 :]
            log_probs = torch.log_softmax(logits, dim=-1)
            if residual is not None:
                texts = [base_tokenizer.decode(response_ids[:j]) for j in range(len(targets))]
                r = read_residual(residual, residual_tokenizer, [prompt] * len(texts), texts)
                log_probs = guided_log_probs(logits, r, residual.connection, vocab_map)
        losses += (-log_probs[torch.arange(len(targets)), targets]).tolist()
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def trained_residual(tiny_lm, tmp_path_factory) -> ResidualValueNetwork:
    return train_tiny_residual(tiny_lm, tmp_path_factory.mktemp("ivl-transfer"))[0]


# the map


def test_the_same_tokenizer_maps_by_identity_without_a_copy(tiny_tokenizer):
    vocab_map = VocabularyMap.build(tiny_tokenizer, tiny_tokenizer)
    delta = torch.randn(2, len(tiny_tokenizer))
    assert vocab_map.index is None and vocab_map.shared_ids
    assert vocab_map.map_delta(delta) is delta


def test_the_same_tokenizer_with_wider_base_logits_pads_with_zero(tiny_tokenizer):
    size = len(tiny_tokenizer)
    vocab_map = VocabularyMap.build(tiny_tokenizer, tiny_tokenizer, size, size + 3)
    delta = torch.randn(size)
    mapped = vocab_map.map_delta(delta)
    assert torch.equal(mapped[:size], delta) and torch.equal(mapped[size:], torch.zeros(3))


def test_another_vocabulary_maps_by_token_string_with_zero_for_the_unmatched(tiny_tokenizer):
    target = other_tokenizer()
    vocab_map = VocabularyMap.build(tiny_tokenizer, target)
    delta = torch.arange(len(tiny_tokenizer), dtype=torch.float32) + 1.0  # no delta is 0
    mapped = vocab_map.map_delta(delta)
    source_ids, target_ids = tiny_tokenizer.get_vocab(), target.get_vocab()
    assert not vocab_map.shared_ids
    for word in ("the", "list", "method"):
        assert mapped[target_ids[word]] == delta[source_ids[word]], word
    assert mapped[target_ids["report"]] == 0  # only in the target
    assert mapped[target.eos_token_id] == delta[tiny_tokenizer.eos_token_id]  # '[EOS]' by role
    assert vocab_map.coverage["target_mapped"] == len(target) - 1  # all but 'report'


def test_space_and_byte_markers_of_byte_level_and_sentencepiece_vocabularies_meet():
    from tokenizers import decoders

    byte_level = word_tokenizer({"<unk>": 0, "Ġthe": 1, "the": 2, "Ċ": 3}, unk_token="<unk>")
    byte_level.backend_tokenizer.decoder = decoders.ByteLevel()
    pieces = word_tokenizer({"<unk>": 0, "<0x0A>": 1, "the": 2, "▁the": 3}, unk_token="<unk>")
    pieces.backend_tokenizer.decoder = decoders.Metaspace()
    vocab_map = VocabularyMap.build(byte_level, pieces)
    # target '<0x0A>' <- source 'Ċ', 'the' <- 'the', '▁the' <- 'Ġthe'
    assert vocab_map.index.tolist() == [0, 3, 2, 1]


# transfer of a trained residual


def test_a_residual_raises_the_demonstrations_likelihood_under_another_base_with_its_vocabulary(
    trained_residual, tiny_tokenizer, tmp_path
):
    other = load_lm(make_causal_lm(tmp_path / "other", seed=1))
    vocab_map = VocabularyMap.build(tiny_tokenizer, tiny_tokenizer)
    alone = demo_nll(other, tiny_tokenizer)
    guided = demo_nll(other, tiny_tokenizer, trained_residual, tiny_tokenizer, vocab_map)
    assert guided < alone - 0.5, (alone, guided)


def test_a_residual_raises_the_demonstrations_likelihood_under_a_base_of_another_vocabulary(
    trained_residual, tiny_tokenizer, tmp_path
):
    target = other_tokenizer()
    other = load_lm(make_other_lm(tmp_path / "other-vocab", seed=2))
    vocab_map = VocabularyMap.build(tiny_tokenizer, target)
    alone = demo_nll(other, target)
    guided = demo_nll(other, target, trained_residual, tiny_tokenizer, vocab_map)
    assert guided < alone - 0.5, (alone, guided)


def test_decoding_on_another_vocabulary_with_a_zero_residual_equals_the_base_alone(
    tiny_lm, tiny_tokenizer, tmp_path
):
    target = other_tokenizer()
    other = load_lm(make_other_lm(tmp_path / "other-vocab", seed=2))
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1, "log_probs")
    settings = TokenGuidanceSettings(top_k=50, max_new_tokens=6)
    vocab_map = VocabularyMap.build(tiny_tokenizer, target)
    guided = decode_with_residual(
        other, target, residual, tiny_tokenizer, PROMPTS, settings, [1, 2, 3], vocab_map
    )
    alone = decode_with_residual(other, target, None, None, PROMPTS, settings, [1, 2, 3])
    assert guided == alone and any(response for response, _ in alone)


def test_greedy_decoding_on_another_vocabulary_follows_the_transferred_residual(
    trained_residual, tiny_tokenizer, tmp_path
):
    target = other_tokenizer()
    other = load_lm(make_other_lm(tmp_path / "other-vocab", seed=2))
    vocab_map = VocabularyMap.build(tiny_tokenizer, target)
    settings = TokenGuidanceSettings(max_new_tokens=8, greedy=True)
    prompts = [p for p, _ in DEMOS]
    outputs = decode_with_residual(
        other, target, trained_residual, tiny_tokenizer, prompts, settings, [0] * len(prompts),
        vocab_map,
    )  # fmt: skip
    # every demonstration starts its response with 'a short'
    assert [target.decode(response[:2]) for response, _ in outputs] == ["a short"] * len(DEMOS)
