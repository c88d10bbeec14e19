import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from reward.base import Reward
from valuefn.model import TokenValueModel
from valuefn.scoring import ValueEnsemble
from valuefn.token_guidance import (
    RewardShift,
    TokenGuidanceSettings,
    ValueShift,
    decode_one,
    step_distribution,
)


@pytest.fixture(scope="module")
def policy(tiny_lm):
    return AutoModelForCausalLM.from_pretrained(tiny_lm).eval()


@pytest.fixture(scope="module")
def ensemble(tiny_lm, tiny_tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("value")
    torch.manual_seed(4)
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    torch.nn.init.normal_(model.value_head.weight, std=2.0)
    model.save(directory, tiny_tokenizer)
    return ValueEnsemble.load([directory], [1.0], max_length=128, batch_size=8)


def logits_after(policy, ids):
    with torch.no_grad():
        return policy(input_ids=torch.tensor([ids])).logits[0, -1]


def test_beta_zero_reproduces_the_base_distribution(policy, ensemble, tiny_tokenizer):
    prompt = "the list of data"
    ids = tiny_tokenizer(prompt).input_ids
    logits = logits_after(policy, ids)
    scorer = ValueShift(ensemble, beta=0.0, policy_tokenizer=tiny_tokenizer)
    scorer.start(prompt, prompt)
    vocab = logits.shape[-1]
    tokens, probs = step_distribution(logits, [], scorer, top_k=vocab, temperature=0.7)
    guided = torch.zeros(vocab).index_put_((tokens,), probs)
    torch.testing.assert_close(guided, torch.softmax(logits / 0.7, dim=-1))
    # with top-k < vocab it is the base distribution restricted to the top k, renormalised
    tokens, probs = step_distribution(logits, [], scorer, top_k=5, temperature=1.0)
    base = torch.softmax(logits, dim=-1)[tokens]
    torch.testing.assert_close(probs, base / base.sum())


def test_value_shift_is_beta_times_centred_value_of_each_extension(
    policy, ensemble, tiny_tokenizer
):
    prompt, response = "the list of data", tiny_tokenizer("returns a").input_ids
    scorer = ValueShift(ensemble, beta=2.0, policy_tokenizer=tiny_tokenizer)
    scorer.start(prompt, prompt)
    for token in response:
        scorer.advance(token)
    candidates = [5, 9, 12]
    shifts = scorer.shifts(response, candidates)
    model = ensemble.members[0].model
    prompt_ids = tiny_tokenizer(prompt).input_ids
    full = []
    for c in candidates:
        ids = torch.tensor([prompt_ids + response + [c]])
        with torch.no_grad():
            full.append(model(ids, torch.ones_like(ids))[0, -1].item())
    full = np.array(full)
    np.testing.assert_allclose(shifts, 2.0 * (full - full.mean()), atol=1e-5)


def test_decoding_is_seeded_and_respects_the_budget(policy, ensemble, tiny_tokenizer):
    prompt = "a file"
    ids = tiny_tokenizer(prompt).input_ids
    settings = TokenGuidanceSettings(top_k=6, max_new_tokens=7, temperature=1.0)

    def run(seed):
        scorer = ValueShift(ensemble, beta=1.0, policy_tokenizer=tiny_tokenizer)
        return decode_one(
            policy, tiny_tokenizer.eos_token_id, ids, prompt, prompt, scorer, settings, seed
        )

    first, ended = run(1)
    assert run(1) == (first, ended)
    assert len(first) <= 7 and tiny_tokenizer.eos_token_id not in first
    assert ended or len(first) == 7
    assert any(run(s)[0] != first for s in range(2, 6))


class WordCount(Reward):
    name = "word_count"

    def __init__(self, word):
        self.word = word

    def score(self, prompts, responses):
        return np.array([r.split().count(self.word) for r in responses], dtype=float)


def test_args_greedy_follows_a_strong_reward(policy, tiny_tokenizer):
    ids = tiny_tokenizer("the document").input_ids
    settings = TokenGuidanceSettings(top_k=len(tiny_tokenizer), max_new_tokens=5, greedy=True)
    scorer = RewardShift(WordCount("value"), weight=100.0, policy_tokenizer=tiny_tokenizer)
    response, _ = decode_one(
        policy, tiny_tokenizer.eos_token_id, ids, "doc", "the document", scorer, settings, 0
    )
    assert tiny_tokenizer.decode(response).split() == ["value"] * 5


def test_value_model_with_another_tokenizer_is_refused(ensemble, tiny_lm):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(tiny_lm)
    other.add_tokens(["zebra"])
    with pytest.raises(ValueError, match="share the policy's tokenizer"):
        ValueShift(ensemble, beta=1.0, policy_tokenizer=other)
