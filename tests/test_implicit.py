import numpy as np
import torch
from transformers import AutoModelForCausalLM

from iro.valuefn.implicit import ImplicitRewardScorer
from tests.conftest import make_causal_lm


def test_implicit_reward_is_the_log_likelihood_ratio_of_the_response(
    tiny_lm, tiny_tokenizer, tmp_path
):
    other = make_causal_lm(tmp_path / "other", seed=7)
    scorer = ImplicitRewardScorer.load(str(other), str(tiny_lm), beta=2.0, batch_size=2)
    prompts = ["the list", "a file", "the list"]
    responses = ["returns a value", "one", ""]
    ended = [True, False, True]
    scores = scorer.score(prompts, responses, ended)

    def logprob(path, prompt, response, eos):
        model = AutoModelForCausalLM.from_pretrained(path)
        p = tiny_tokenizer(prompt).input_ids
        r = tiny_tokenizer(response).input_ids + ([tiny_tokenizer.eos_token_id] if eos else [])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([p + r])).logits[0], dim=-1)
        return sum(lp[len(p) - 1 + t, tok].item() for t, tok in enumerate(r))

    expected = [
        (logprob(other, p, r, e) - logprob(tiny_lm, p, r, e)) / 2.0
        for p, r, e in zip(prompts, responses, ended, strict=True)
    ]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    same = ImplicitRewardScorer.load(str(tiny_lm), str(tiny_lm))
    np.testing.assert_allclose(same.score(prompts, responses, ended), 0.0, atol=1e-6)
