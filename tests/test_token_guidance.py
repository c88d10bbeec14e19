import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from iro.reward.base import Reward
from iro.valuefn.model import TokenValueModel
from iro.valuefn.scoring import ValueEnsemble
from iro.valuefn.token_guidance import (
    GuidedPrompt,
    RewardShift,
    TokenGuidanceSettings,
    ValueShift,
    decode,
    decode_batch,
    step_distribution,
)

HEADS = ["scalar", "vocabulary"]


@pytest.fixture(scope="module")
def policy(tiny_lm):
    return AutoModelForCausalLM.from_pretrained(tiny_lm).eval()


@pytest.fixture(scope="module", params=HEADS)
def ensemble(request, tiny_lm, tiny_tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"value-{request.param}")
    torch.manual_seed(4)
    model = TokenValueModel.from_causal_lm(str(tiny_lm), head=request.param)
    torch.nn.init.normal_(model.value_head.weight, std=2.0)
    model.save(directory, tiny_tokenizer)
    return ValueEnsemble.load([directory], [1.0], max_length=128, batch_size=8)


def prompt(tokenizer, text, seed=0):
    return GuidedPrompt(tokenizer(text).input_ids, text, text, seed)


def logits_after(policy, ids):
    with torch.no_grad():
        return policy(input_ids=torch.tensor([ids])).logits[0, -1]


def test_beta_zero_reproduces_the_base_distribution(policy, ensemble, tiny_tokenizer):
    start = prompt(tiny_tokenizer, "the list of data")
    logits = logits_after(policy, start.ids)[None]
    scorer = ValueShift(ensemble, beta=0.0, policy_tokenizer=tiny_tokenizer)
    scorer.start([start])
    vocab = logits.shape[-1]
    tokens, probs = step_distribution(logits, [[]], scorer, top_k=vocab, temperature=0.7)
    guided = torch.zeros(vocab).index_put_((tokens[0],), probs[0])
    torch.testing.assert_close(guided, torch.softmax(logits[0] / 0.7, dim=-1))
    # with top-k < vocab it is the base distribution restricted to the top k, renormalised
    tokens, probs = step_distribution(logits, [[]], scorer, top_k=5, temperature=1.0)
    base = torch.softmax(logits[0], dim=-1)[tokens[0]]
    torch.testing.assert_close(probs[0], base / base.sum())


def test_value_shift_is_beta_times_centred_value_of_each_extension(ensemble, tiny_tokenizer):
    start = prompt(tiny_tokenizer, "the list of data")
    response = tiny_tokenizer("returns a value").input_ids
    scorer = ValueShift(ensemble, beta=2.0, policy_tokenizer=tiny_tokenizer)
    scorer.start([start, prompt(tiny_tokenizer, "a file")])  # a second, shorter row
    for token in response:
        scorer.advance(torch.tensor([0, 1]), torch.tensor([token, token]))
    candidates = torch.tensor([[5, 9, 12], [5, 9, 12]])
    shifts = scorer.shifts([response, response], candidates)[0].numpy()
    model = ensemble.members[0].model
    full = []
    for c in candidates[0].tolist():
        ids = torch.tensor([start.ids + response + [c]])
        with torch.no_grad():
            full.append(model(ids, torch.ones_like(ids))[0, -1].item())
    full = np.array(full)
    np.testing.assert_allclose(shifts, 2.0 * (full - full.mean()), atol=1e-5)


def test_value_shift_in_bf16_agrees_with_float32(ensemble, tiny_tokenizer):
    bf16 = ValueEnsemble(
        ensemble.members, ensemble.max_length, ensemble.batch_size, score_dtype=torch.bfloat16
    )
    candidates = torch.tensor([[5, 9, 12]])
    shifts = []
    for values in (ensemble, bf16):
        scorer = ValueShift(values, beta=1.0, policy_tokenizer=tiny_tokenizer)
        scorer.start([prompt(tiny_tokenizer, "the list of data")])
        scorer.advance(torch.tensor([0]), torch.tensor([7]))
        shifts.append(scorer.shifts([[7]], candidates)[0].numpy())
    np.testing.assert_allclose(shifts[1], shifts[0], atol=0.1)
    assert not np.array_equal(shifts[1], shifts[0])  # it did run in bf16


def test_decoding_is_seeded_and_respects_the_budget(policy, ensemble, tiny_tokenizer):
    settings = TokenGuidanceSettings(top_k=6, max_new_tokens=7, temperature=1.0)

    def run(seed):
        scorer = ValueShift(ensemble, beta=1.0, policy_tokenizer=tiny_tokenizer)
        start = prompt(tiny_tokenizer, "a file", seed)
        return decode_batch(policy, tiny_tokenizer.eos_token_id, [start], scorer, settings)[0]

    first, ended = run(1)
    assert run(1) == (first, ended)
    assert len(first) <= 7 and tiny_tokenizer.eos_token_id not in first
    assert ended or len(first) == 7
    assert any(run(s)[0] != first for s in range(2, 6))


def test_a_prompt_decodes_in_a_batch_as_it_does_alone(policy, ensemble, tiny_tokenizer):
    texts = ["the list of data", "a file", "the", "returns the new string of a file path"]
    prompts = [prompt(tiny_tokenizer, t, seed) for seed, t in enumerate(texts)]
    settings = TokenGuidanceSettings(top_k=30, max_new_tokens=30, temperature=1.0)
    scorer = ValueShift(ensemble, beta=0.05, policy_tokenizer=tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    together = decode(policy, eos, prompts, scorer, settings, batch_size=4)
    alone = decode(policy, eos, prompts, scorer, settings, batch_size=1)
    assert together == alone
    assert len({len(r) for r, _ in together}) > 1  # rows left the batch at different steps


class WordCount(Reward):
    name = "word_count"

    def __init__(self, word):
        self.word = word

    def score(self, prompts, responses):
        return np.array([r.split().count(self.word) for r in responses], dtype=float)


def test_args_greedy_follows_a_strong_reward_in_every_row(policy, tiny_tokenizer):
    settings = TokenGuidanceSettings(top_k=len(tiny_tokenizer), max_new_tokens=5, greedy=True)
    scorer = RewardShift(WordCount("value"), weight=100.0, policy_tokenizer=tiny_tokenizer)
    prompts = [prompt(tiny_tokenizer, "the document"), prompt(tiny_tokenizer, "a list of data")]
    for response, _ in decode_batch(policy, tiny_tokenizer.eos_token_id, prompts, scorer, settings):
        assert tiny_tokenizer.decode(response).split() == ["value"] * 5


def test_value_model_with_another_tokenizer_is_refused(ensemble, tiny_lm):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(tiny_lm)
    other.add_tokens(["zebra"])
    with pytest.raises(ValueError, match="share the policy's tokenizer"):
        ValueShift(ensemble, beta=1.0, policy_tokenizer=other)
