"""The vocabulary value head: V(s∘a) = head(h_s)[a], read for every next token from one pass."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from iro.valuefn.model import TokenValueModel
from iro.valuefn.scoring import ValueEnsemble
from iro.valuefn.token_guidance import GuidedPrompt, TokenGuidanceSettings, ValueShift, decode


def vocabulary_model(tiny_lm):
    torch.manual_seed(0)
    model = TokenValueModel.from_causal_lm(str(tiny_lm), head="vocabulary").eval()
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    torch.nn.init.normal_(model.value_head.bias, std=1.0)
    model.target_mean, model.target_scale = 0.3, 2.0
    return model


def test_forward_is_the_previous_states_next_token_values_gathered(tiny_lm, tiny_tokenizer):
    model = vocabulary_model(tiny_lm)
    ids = torch.tensor([tiny_tokenizer("the list of data returns a value").input_ids])
    with torch.no_grad():
        values = model(ids, torch.ones_like(ids))[0]
        hidden = model.trunk(input_ids=ids).last_hidden_state[0]
        every = model.next_token_values(hidden)  # (seq, vocab)
    assert every.shape == (ids.shape[1], len(tiny_tokenizer))
    torch.testing.assert_close(values[1:], every[:-1].gather(1, ids[0, 1:, None])[:, 0])
    # the first token has no previous state: a zero state, i.e. the head's bias
    bias = model.value_head.bias[ids[0, 0]].item()
    assert values[0].item() == pytest.approx(0.3 + 2.0 * bias, abs=1e-5)


def test_a_fresh_vocabulary_head_values_every_next_token_alike(tiny_lm, tiny_tokenizer):
    model = TokenValueModel.from_causal_lm(str(tiny_lm), head="vocabulary")
    model.target_mean = 0.6
    ids = torch.tensor([tiny_tokenizer("the list of data").input_ids])
    with torch.no_grad():
        every = model.next_token_values(model.trunk(input_ids=ids).last_hidden_state)
    # V(s∘a) is one standardised value per state, like the scalar head's: fresh shifts are zero
    torch.testing.assert_close(every, every[..., :1].expand_as(every))
    assert every.sub(0.6).abs().max() < 0.5


def test_a_trained_vocabulary_head_round_trips(tiny_lm, tiny_tokenizer, tmp_path):
    from iro.valuefn.training import ValueTrainingArguments, train_value_model
    from tests.test_value_model import rows

    torch.manual_seed(0)
    model = TokenValueModel.from_causal_lm(str(tiny_lm), head="vocabulary")
    examples = rows(
        *[("the document", "returns a value", True, 1.0), ("the document", "list of", True, -1.0)]
        * 4
    )
    args = ValueTrainingArguments(
        output_dir=str(tmp_path / "work"), learning_rate=3e-3, num_train_epochs=3,
        per_device_train_batch_size=8, use_cpu=True, disable_tqdm=True, report_to="none",
        max_length=64,
    )  # fmt: skip
    train_value_model(model, tiny_tokenizer, examples, args)
    model.save(tmp_path / "v", tiny_tokenizer)
    assert json.loads((tmp_path / "v" / "config.json").read_text())["head"] == "vocabulary"
    loaded = TokenValueModel.load(tmp_path / "v")
    assert loaded.head == "vocabulary"
    assert (loaded.target_mean, loaded.target_scale) == (model.target_mean, model.target_scale)
    ids = torch.tensor([tiny_tokenizer("the document returns a value").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, torch.ones_like(ids)), model(ids, torch.ones_like(ids))
        )


def test_a_value_model_saved_without_a_head_kind_loads_as_scalar(tiny_lm, tiny_tokenizer, tmp_path):
    from tests.test_value_model import older_layout

    meta = {"kind": "token_value_model", "target_mean": 0.0, "target_scale": 1.0, "prior": None}
    scalar = TokenValueModel.from_causal_lm(str(tiny_lm))
    assert (
        TokenValueModel.load(older_layout(scalar, tmp_path, tiny_tokenizer, meta)).head == "scalar"
    )
    with pytest.raises(ValueError, match="value head must be one of"):
        TokenValueModel.from_causal_lm(str(tiny_lm), head="matrix")


def equal_scalar_and_vocabulary(tiny_lm):
    """Two value models with the same V on a trunk without layers: h_t depends on token t only,
    so the scalar V(s∘a) = w·h(a) + b is a per-token constant a vocabulary head holds as its bias."""
    torch.manual_seed(5)
    scalar = TokenValueModel.from_causal_lm(str(tiny_lm), num_layers=0).eval()
    torch.nn.init.normal_(scalar.value_head.weight, std=1.0)
    vocabulary = TokenValueModel.on_trunk(scalar.trunk, head="vocabulary").eval()
    every_token = torch.arange(scalar.config.text_config.vocab_size)[:, None]
    with torch.no_grad():
        hidden = scalar.trunk(input_ids=every_token).last_hidden_state[:, 0]
        vocabulary.value_head.weight.zero_()
        vocabulary.value_head.bias.copy_(scalar.value_head(hidden)[:, 0])
    return scalar, vocabulary


def test_equal_heads_give_equal_shifts_and_equal_decodes(tiny_lm, tiny_tokenizer, tmp_path):
    ensembles = []
    for name, model in zip(("s", "v"), equal_scalar_and_vocabulary(tiny_lm), strict=True):
        model.save(tmp_path / name, tiny_tokenizer)
        ensembles.append(ValueEnsemble.load([tmp_path / name], [0.5], 64, 4))
    texts = ["the list of data", "a file", "returns"]
    prompts = [GuidedPrompt(tiny_tokenizer(t).input_ids, t, t, i) for i, t in enumerate(texts)]
    candidates = torch.tensor([[3, 9, 1, 20], [4, 4, 7, 30], [5, 6, 8, 2]])
    scorers = [ValueShift(e, beta=0.3, policy_tokenizer=tiny_tokenizer) for e in ensembles]
    shifts = []
    for scorer in scorers:
        scorer.start(prompts)
        scorer.advance(torch.tensor([0, 2]), torch.tensor([11, 12]))
        shifts.append(scorer.shifts([[11], [12]], candidates[:2]))
    torch.testing.assert_close(shifts[0], shifts[1])
    assert shifts[0].abs().max() > 0.1  # the shifts are not trivially zero
    policy = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    settings = TokenGuidanceSettings(top_k=10, max_new_tokens=8)
    scalar_out, vocabulary_out = (
        decode(policy, tiny_tokenizer.eos_token_id, prompts, s, settings) for s in scorers
    )
    assert scalar_out == vocabulary_out
