import json
import pickle

import numpy as np
import pytest
import torch

from iro.valuefn.encoding import encode_pair
from iro.valuefn.kv_cache import ResponseKV
from iro.valuefn.model import TokenValueModel
from iro.valuefn.residual import ResidualValueNetwork
from iro.valuefn.scoring import ValueEnsemble
from iro.valuefn.training import (
    ValueCollator,
    ValueTrainingArguments,
    train_value_model,
    value_regression_loss,
)


def rows(*examples):
    """One training row per (prompt, response, ended, target[, weight]) tuple."""
    import datasets

    full = [(*e, 1.0) if len(e) == 4 else e for e in examples]
    return datasets.Dataset.from_dict(
        {
            "prompt_text": [e[0] for e in full],
            "responses": [[e[1]] for e in full],
            "ended": [[e[2]] for e in full],
            "targets": [[e[3]] for e in full],
            "weights": [[e[4]] for e in full],
        }
    )


def test_encode_pair_boundary_eos_and_left_truncation(tiny_tokenizer):
    pair = encode_pair(
        tiny_tokenizer, "the list of data", "returns a value", ended=True, max_length=64
    )
    assert pair.prompt_len == 4
    assert pair.input_ids[-1] == tiny_tokenizer.eos_token_id and len(pair.input_ids) == 8
    short = encode_pair(
        tiny_tokenizer, "the list of data", "returns a value", ended=False, max_length=5
    )
    # the end of the prompt is kept, the response is whole
    assert (
        short.prompt_len == 2
        and short.input_ids == tiny_tokenizer("of data returns a value").input_ids
    )
    with pytest.raises(ValueError, match="no room for the prompt"):
        encode_pair(tiny_tokenizer, "the", "returns a value", ended=True, max_length=4)


def test_collator_masks_exactly_the_response_states(tiny_tokenizer):
    collate = ValueCollator(tiny_tokenizer, max_length=64)
    batch = collate(
        list(
            rows(
                ("the list", "returns a value", True, 0.5),
                ("the list of data", "one", False, -1.0, 2.0),
            )
        )
    )
    # example 0: prompt 2 tokens, response 3 + EOS -> states read at positions 1..5
    assert batch["value_mask"][0, 0].tolist() == [False, True, True, True, True, True]
    # example 1: prompt 4 tokens, response 1 (no EOS) -> states at positions 3..4; position 5 is padding
    assert batch["value_mask"][1, 0].tolist() == [False, False, False, True, True, False]
    assert batch["attention_mask"][1, 0, 4].tolist() == [True] * 5 + [False]  # causal, no padding
    # nothing real attends to the padding position; the padding row is never empty
    assert batch["attention_mask"][1, 0, :, 5].tolist() == [False] * 5 + [True]
    # every state regresses to its response's target
    assert batch["targets"][0, 0, batch["value_mask"][0, 0]].tolist() == [0.5] * 5
    assert batch["targets"][1, 0, batch["value_mask"][1, 0]].tolist() == [-1.0] * 2
    assert batch["weights"].tolist() == [[1.0], [2.0]]


def test_packed_responses_see_the_prompt_and_themselves_only(tiny_tokenizer):
    import datasets

    row = datasets.Dataset.from_dict(
        {
            "prompt_text": ["the list"],
            "responses": [["returns a value", "one"]],
            "ended": [[True, False]],
            "targets": [[0.5, -1.0]],
            "weights": [[1.0, 3.0]],
        }
    )
    batch = ValueCollator(tiny_tokenizer, max_length=64)(list(row))
    # prompt 2 tokens, response 0: 3 + EOS (positions 2..5), response 1: 1 token (position 6)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 2]
    assert batch["attention_mask"][0, 0, 6].tolist() == [True, True] + [False] * 4 + [True]
    assert batch["value_mask"][0, 1].tolist() == [False, True] + [False] * 4 + [True]
    assert batch["value_mask"][0, 0].tolist() == [False, True, True, True, True, True, False]
    assert batch["targets"][0, 1, batch["value_mask"][0, 1]].tolist() == [-1.0, -1.0]
    assert batch["weights"].tolist() == [[1.0, 3.0]]


def test_with_a_prior_only_its_states_are_trained_on_the_residual(tiny_tokenizer):
    import datasets

    row = datasets.Dataset.from_dict(
        {
            "prompt_text": ["the list"],
            "responses": [["returns a value", "one"]],
            "ended": [[True, False]],
            "targets": [[0.5, -1.0]],
            "weights": [[1.0, 1.0]],
            "prior_states": [[[2, 3], [1]]],
            "prior_values": [[[0.25, 0.5], [-0.5]]],
        }
    )
    batch = ValueCollator(tiny_tokenizer, max_length=64)(list(row))
    # prompt 2 tokens; response 0 at positions 2..5 (state t is read at position 1 + t),
    # response 1 at position 6 (its state 1 is read there)
    assert batch["value_mask"][0, 0].tolist() == [False] * 3 + [True, True] + [False] * 2
    assert batch["value_mask"][0, 1].tolist() == [False] * 6 + [True]
    assert batch["targets"][0, 0, 3:5].tolist() == [0.25, 0.0]  # 0.5 - prior
    assert batch["targets"][0, 1, 6].item() == -0.5


@pytest.mark.parametrize("head", ["scalar", "vocabulary"])
def test_a_packed_row_gives_each_response_the_values_it_has_alone(tiny_lm, tiny_tokenizer, head):
    import datasets

    model = TokenValueModel.from_causal_lm(str(tiny_lm), head=head).eval()
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    prompt, responses, ended = (
        "the list of data",
        ["returns a value", "one", "list"],
        [True, False, True],
    )
    row = datasets.Dataset.from_dict(
        {"prompt_text": [prompt], "responses": [responses], "ended": [ended],
         "targets": [[0.0] * 3], "weights": [[1.0] * 3]}
    )  # fmt: skip
    batch = ValueCollator(tiny_tokenizer, max_length=64)(list(row))
    with torch.no_grad():
        packed = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"])[0]
        for j, (response, done) in enumerate(zip(responses, ended, strict=True)):
            ids = torch.tensor([encode_pair(tiny_tokenizer, prompt, response, done, 64).input_ids])
            alone = model(ids, torch.ones_like(ids))[0, 3:]  # the empty state onwards
            torch.testing.assert_close(packed[batch["value_mask"][0, j]], alone, atol=1e-5, rtol=0)


def test_loss_ignores_masked_positions_and_averages_per_response():
    values = torch.tensor([[9.0, 1.0, 3.0], [0.0, 0.0, 7.0]])
    mask = torch.tensor([[[False, True, True]], [[True, True, False]]])
    targets = torch.ones((2, 1, 3))
    weights = torch.tensor([[1.0], [3.0]])
    # seq 0: mean(0.5*0, 0.5*4) = 1.0; seq 1: mean(0.5*1, 0.5*1) = 0.5; weighted mean: (1 + 1.5)/2
    loss = value_regression_loss(values, targets, mask, weights)
    assert loss.item() == pytest.approx(1.25)
    changed = values.clone()
    changed[0, 0] = -100.0
    changed[1, 2] = 100.0
    assert value_regression_loss(changed, targets, mask, weights).item() == pytest.approx(1.25)
    # a padding response (no states) does not count, whatever its target and weight
    padded = value_regression_loss(
        values,
        torch.cat([targets, torch.full((2, 1, 3), 50.0)], dim=1),
        torch.cat([mask, torch.zeros_like(mask)], dim=1),
        torch.tensor([[1.0, 9.0], [3.0, 9.0]]),
    )
    assert padded.item() == pytest.approx(1.25)


def test_truncated_trunk_and_save_load_roundtrip(tiny_lm, tiny_tokenizer, tmp_path):
    model = TokenValueModel.from_causal_lm(str(tiny_lm), num_layers=1)
    assert model.config.text_config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="num_layers"):
        TokenValueModel.from_causal_lm(str(tiny_lm), num_layers=5)
    ids = torch.tensor([tiny_tokenizer("the list of data").input_ids])
    before = model(ids, torch.ones_like(ids))
    model.save(tmp_path / "v", tiny_tokenizer)
    assert not list(tmp_path.glob("v/*.bin")) and (tmp_path / "v" / "model.safetensors").is_file()
    loaded = TokenValueModel.load(tmp_path / "v")
    torch.testing.assert_close(loaded(ids, torch.ones_like(ids)), before)


def networks_with_random_heads(tiny_lm) -> dict[str, TokenValueModel | ResidualValueNetwork]:
    """A value model and a residual, each with a random head and settings of its own."""
    torch.manual_seed(0)
    value = TokenValueModel.from_causal_lm(str(tiny_lm), 1, head="vocabulary")
    value.target_mean, value.target_scale, value.prior = 0.25, 3.0, "reward"
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1, "log_probs")
    for head in (value.value_head.weight, residual.head.weight):
        torch.nn.init.normal_(head)
    return {"value": value.eval(), "residual": residual.eval()}


def older_layout(model: TokenValueModel | ResidualValueNetwork, directory, tokenizer, meta: dict):
    """`model` saved as before its config held the head's settings: config.json the trunk's
    own, the settings in `meta` in a JSON file beside it."""
    model.save(directory, tokenizer)
    model.config.text_config.save_pretrained(directory)
    (directory / model.legacy_meta).write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("kind", ["value", "residual"])
def test_save_pretrained_round_trips_without_pickles(
    tiny_lm, tiny_tokenizer, tmp_path, monkeypatch, kind
):
    model = networks_with_random_heads(tiny_lm)[kind]
    model.save_pretrained(tmp_path / kind)
    saved = sorted(p.name for p in (tmp_path / kind).iterdir())
    assert saved == ["config.json", "model.safetensors"]

    def no_pickle(*args, **kwargs):
        raise AssertionError("unpickling called")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = type(model).load(tmp_path / kind)
    ids = torch.tensor([tiny_tokenizer("the list of data").input_ids])
    with torch.no_grad():
        assert torch.equal(loaded(ids, torch.ones_like(ids)), model(ids, torch.ones_like(ids)))
    assert loaded.config.to_diff_dict() == model.config.to_diff_dict()  # what config.json holds
    assert loaded.config.text_config._attn_implementation == "sdpa"  # packed training needs it


@pytest.mark.parametrize("kind", ["value", "residual"])
def test_a_directory_in_the_older_layout_still_loads(tiny_lm, tiny_tokenizer, tmp_path, kind):
    model = networks_with_random_heads(tiny_lm)[kind]
    meta = {"value": {"kind": "token_value_model", "head": "vocabulary", "target_mean": 0.25,
                      "target_scale": 3.0, "prior": "reward"},
            "residual": {"kind": "ivl_residual", "connection": "log_probs",
                         "vocab_size": model.config.text_config.vocab_size}}  # fmt: skip
    loaded = type(model).load(older_layout(model, tmp_path / kind, tiny_tokenizer, meta[kind]))
    ids = torch.tensor([tiny_tokenizer("the list of data").input_ids])
    with torch.no_grad():
        assert torch.equal(loaded(ids, torch.ones_like(ids)), model(ids, torch.ones_like(ids)))
    settings = {f: getattr(model.config, f) for f in model.legacy_fields}
    assert {f: getattr(loaded.config, f) for f in model.legacy_fields} == settings


def test_a_directory_that_is_no_saved_model_is_refused_by_name(tiny_lm, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=rf"{tiny_lm} is not a saved value model: .*'llama'"
    ):
        TokenValueModel.load(tiny_lm)  # a causal LM, no value model
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=rf"{tmp_path} is not a saved residual .*safetensors"
    ):
        ResidualValueNetwork.load(tmp_path)


def test_training_fits_rewards_and_ranks(tiny_lm, tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    examples = rows(
        *[
            ("the document", "returns a value", True, 1.0),
            ("the document", "list of file path", True, -1.0),
        ]
        * 8
    )
    args = ValueTrainingArguments(
        output_dir=str(tmp_path / "work"), learning_rate=3e-3, num_train_epochs=15,
        per_device_train_batch_size=8, logging_steps=1, use_cpu=True, disable_tqdm=True,
        report_to="none", max_length=64,
    )  # fmt: skip
    metrics = train_value_model(model, tiny_tokenizer, examples, args)
    # Both responses share the empty-response state, whose best value is the mean reward 0, so
    # 1/2 * 1^2 at that one state is irreducible: per sequence 0.5 / (number of states).
    floor = (0.5 / 5 + 0.5 / 6) / 2  # states: 3 tokens + EOS + empty = 5, and 4 + EOS + empty = 6
    assert metrics["first_logged_loss"] > 2 * floor
    assert metrics["last_logged_loss"] == pytest.approx(floor, abs=0.01)
    model.save(tmp_path / "v", tiny_tokenizer)
    ensemble = ValueEnsemble.load([tmp_path / "v"], [1.0], max_length=64, batch_size=2)
    good, bad = ensemble.score(
        ["the document"] * 2, ["returns a value", "list of file path"], [True, True]
    )
    assert good > 0.5 and bad < -0.5


def test_nan_reward_is_rejected(tiny_lm, tiny_tokenizer, tmp_path):
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    args = ValueTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="non-finite reward in value training row 1"):
        train_value_model(
            model, tiny_tokenizer,
            rows(("a", "b", True, 1.0), ("a", "b", True, float("nan"))), args,
        )  # fmt: skip


def test_two_value_models_rank_as_v1_plus_half_v2(tiny_lm, tiny_tokenizer, tmp_path):
    dirs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = TokenValueModel.from_causal_lm(str(tiny_lm))
        torch.nn.init.normal_(model.value_head.weight, std=1.0)
        model.save(tmp_path / f"v{seed}", tiny_tokenizer)
        dirs.append(tmp_path / f"v{seed}")
    prompts = ["the list"] * 4
    responses = ["returns a value", "one short sentence", "the", "data of the file"]
    ended = [True, False, True, False]
    one = ValueEnsemble.load(dirs[:1], [1.0], 64, 3).score(prompts, responses, ended)
    two = ValueEnsemble.load(dirs[1:], [1.0], 64, 3).score(prompts, responses, ended)
    both = ValueEnsemble.load(dirs, [1.0, 2.0], 64, 3).score(prompts, responses, ended)
    torch.testing.assert_close(torch.tensor(both), torch.tensor(one + two / 2))


@pytest.mark.parametrize("head", ["scalar", "vocabulary"])
def test_incremental_scoring_matches_full_forward(tiny_lm, tiny_tokenizer, tmp_path, head):
    torch.manual_seed(3)
    model = TokenValueModel.from_causal_lm(str(tiny_lm), head=head)
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    model.save(tmp_path / "v", tiny_tokenizer)
    prompts = ["the list of data", "the list of data", "a file", "the list of data", "a"]
    responses = ["returns a value", "", "one short sentence of the file", "the", ""]
    ended = [True, False, True, False, False]
    roomy = ValueEnsemble.load([tmp_path / "v"], [1.0], max_length=64, batch_size=2)
    incremental = roomy.score(prompts, responses, ended)
    assert len(roomy.members[0].prompts) == 3  # each prompt was read once
    expected = []
    for p, r, e in zip(prompts, responses, ended, strict=True):
        ids = torch.tensor([encode_pair(tiny_tokenizer, p, r, e, 64).input_ids])
        expected.append(model(ids, torch.ones_like(ids))[0, -1].item())
    np.testing.assert_allclose(incremental, expected, atol=1e-5)
    # inputs over max_length fall back to the full pass with the prompt truncated as in training
    tight = ValueEnsemble.load([tmp_path / "v"], [1.0], max_length=6, batch_size=2)
    truncated = tight.score(prompts[:1], responses[:1], ended[:1])
    ids = torch.tensor([encode_pair(tiny_tokenizer, prompts[0], responses[0], True, 6).input_ids])
    assert truncated[0] == pytest.approx(model(ids, torch.ones_like(ids))[0, -1].item(), abs=1e-5)


def test_bf16_scoring_agrees_with_float32_to_bf16_precision(tiny_lm, tiny_tokenizer, tmp_path):
    torch.manual_seed(5)
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    model.save(tmp_path / "v", tiny_tokenizer)
    prompts = ["the list of data"] * 3 + ["a file"]
    responses = ["returns a value", "", "one short sentence of the file", "the"]
    ended = [True, False, False, False]
    exact = ValueEnsemble.load([tmp_path / "v"], [1.0], 64, 2).score(prompts, responses, ended)
    bf16 = ValueEnsemble.load([tmp_path / "v"], [1.0], 64, 2, score_dtype=torch.bfloat16)
    fast = bf16.score(prompts, responses, ended)
    np.testing.assert_allclose(fast, exact, rtol=0.05, atol=0.05)
    assert not np.array_equal(fast, exact)  # it did run in bf16


def test_a_value_model_that_cannot_read_the_text_is_refused(tiny_lm, tiny_tokenizer, tmp_path):
    TokenValueModel.from_causal_lm(str(tiny_lm)).save(tmp_path / "v", tiny_tokenizer)
    ensemble = ValueEnsemble.load([tmp_path / "v"], [1.0], max_length=64, batch_size=4)
    assert ensemble.score(["the list"], ["returns a value"], [True]).shape == (1,)
    with pytest.raises(ValueError, match=r"cannot read the candidates: 100% of their tokens"):
        ensemble.score(["the list"], ["Zebras quantum-leap über"], [False])


def test_a_fresh_head_starts_at_the_targets_mean_and_keeps_it_when_saved(
    tiny_lm, tiny_tokenizer, tmp_path
):
    from iro.valuefn.training import standardise_targets

    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    torch.nn.init.zeros_(model.value_head.weight)
    standardise_targets(model, rows(("a", "b", True, 0.5), ("a", "c", True, 0.7)))
    assert model.target_mean == pytest.approx(0.6) and model.target_scale == pytest.approx(0.1)
    ids = torch.tensor([tiny_tokenizer("the list of data").input_ids])
    assert model(ids, torch.ones_like(ids)).tolist()[0] == pytest.approx([0.6] * ids.shape[1])
    model.save(tmp_path / "v", tiny_tokenizer)
    loaded = TokenValueModel.load(tmp_path / "v")
    assert (loaded.target_mean, loaded.target_scale) == (model.target_mean, model.target_scale)


def test_advantage_targets_subtract_the_prompts_mean_reward():
    import pandas as pd

    from iro.valuefn.targets import value_rows

    table = pd.DataFrame(
        {
            "prompt_text": ["p", "p"],
            "response": ["a", "b"],
            "ended": [True, False],
            "reward": [0.9, 0.5],
            "prompt_mean_reward": [0.6, 0.6],
            "weight": [1.0, 1.0],
        }
    )
    assert value_rows(table, "advantage", pack=False)["targets"] == [
        [pytest.approx(0.3)],
        [pytest.approx(-0.1)],
    ]
    packed = value_rows(table, "reward", pack=True)
    assert len(packed) == 1 and packed[0]["responses"] == ["a", "b"]
    assert packed[0]["targets"] == pytest.approx([0.9, 0.5])


def test_packed_training_in_bf16_fits_and_ranks(tiny_lm, tiny_tokenizer, tmp_path):
    import datasets

    torch.manual_seed(0)
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    packed = datasets.Dataset.from_dict(
        {
            "prompt_text": ["the document"] * 8,
            "responses": [["returns a value", "list of file path"]] * 8,
            "ended": [[True, True]] * 8,
            "targets": [[1.0, -1.0]] * 8,
            "weights": [[1.0, 1.0]] * 8,
        }
    )
    args = ValueTrainingArguments(
        output_dir=str(tmp_path / "work"), learning_rate=3e-3, num_train_epochs=15, bf16=True,
        per_device_train_batch_size=4, logging_steps=1, use_cpu=True, disable_tqdm=True,
        report_to="none", max_length=64,
    )  # fmt: skip
    metrics = train_value_model(model, tiny_tokenizer, packed, args)
    assert metrics["examples"] == 16 and metrics["rows"] == 8
    assert metrics["last_logged_loss"] < metrics["first_logged_loss"]
    model.save(tmp_path / "v", tiny_tokenizer)
    ensemble = ValueEnsemble.load([tmp_path / "v"], [1.0], max_length=64, batch_size=2)
    good, bad = ensemble.score(
        ["the document"] * 2, ["returns a value", "list of file path"], [True, True]
    )
    assert good > bad


def test_prefix_priors_read_the_reward_every_stride_tokens_and_at_the_end(tiny_tokenizer):
    import pandas as pd

    from iro.valuefn.targets import prefix_priors

    table = pd.DataFrame(
        {"prompt": ["doc", "doc"], "response": ["one short sentence of the file", ""]}
    )
    seen = []

    def reward(prompts, texts):
        seen.extend(zip(prompts, texts, strict=True))
        return [float(len(t)) for t in texts]

    states, values = prefix_priors(table, tiny_tokenizer, reward, stride=2)
    assert states == [[2, 4, 6], [0]]  # 6 tokens: every 2 and the end; an empty response: t = 0
    assert seen[0] == ("doc", "one short") and seen[2] == ("doc", "one short sentence of the file")
    assert values == [[9.0, 21.0, 30.0], [0.0]]  # "one short sentence of" is 21


def test_a_residual_value_adds_the_prior_and_a_finished_response_is_its_reward(
    tiny_lm, tiny_tokenizer, tmp_path
):
    torch.manual_seed(4)
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    plain_dir, residual_dir = tmp_path / "plain", tmp_path / "residual"
    model.save(plain_dir, tiny_tokenizer)
    model.prior = "reward"
    model.save(residual_dir, tiny_tokenizer)
    assert TokenValueModel.load(residual_dir).prior == "reward"

    prompts, responses, ended = ["the list"] * 2, ["returns a value", "one"], [True, False]
    network = ValueEnsemble.load([plain_dir], [1.0], 64, 4).score(prompts, responses, ended)
    with pytest.raises(ValueError, match="residual on the reward of the prefix"):
        ValueEnsemble.load([residual_dir], [1.0], 64, 4)

    def prior(prompt_texts, texts):
        return np.array([10.0 * len(t) for t in texts])

    residual = ValueEnsemble.load([residual_dir], [2.0], 64, 4, prior=prior)
    values = residual.member_values(prompts, responses, ended)[0]
    assert values[0] == pytest.approx(150.0)  # finished: the reward alone
    assert values[1] == pytest.approx(30.0 + network[1], abs=1e-5)  # unfinished: prior + network
    np.testing.assert_allclose(residual.score(prompts, responses, ended), values / 2.0)

    from iro.core.cost import measure

    fresh = ValueEnsemble.load([residual_dir], [2.0], 64, 4, prior=prior)
    with measure() as cost:
        fresh.member_values(prompts, responses, ended)
    read = [len(tiny_tokenizer(t, add_special_tokens=False).input_ids) for t in ("the list", "one")]
    assert cost.value_tokens == sum(read)  # the prompt and the unfinished response, no more


def test_token_level_guidance_refuses_a_residual_value_model(tiny_lm, tiny_tokenizer, tmp_path):
    from iro.valuefn.token_guidance import ValueShift

    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    model.prior = "reward"
    model.save(tmp_path / "v", tiny_tokenizer)
    ensemble = ValueEnsemble.load(
        [tmp_path / "v"], [1.0], 64, 4, prior=lambda p, t: np.zeros(len(t))
    )
    with pytest.raises(ValueError, match="token-level guidance does not read"):
        ValueShift(ensemble, 1.0, tiny_tokenizer)


def test_training_on_a_prior_standardises_the_residuals(tiny_lm, tiny_tokenizer, tmp_path):
    import datasets

    from iro.valuefn.training import standardise_targets

    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    standardise_targets(
        model,
        datasets.Dataset.from_dict(
            {
                "prompt_text": ["a"], "responses": [["b", "c"]], "ended": [[True, True]],
                "targets": [[1.0, 1.0]], "weights": [[1.0, 1.0]],
                "prior_states": [[[1, 2], [1]]], "prior_values": [[[0.0, 1.0], [0.5]]],
            }
        ),
    )  # fmt: skip
    # residuals 1, 0 (each half the weight of its response) and 0.5: mean 0.5, spread sqrt(1/8)
    assert model.target_mean == pytest.approx(0.5)
    assert model.target_scale == pytest.approx(np.sqrt(0.125))


@pytest.mark.parametrize("head", ["scalar", "vocabulary"])
def test_a_call_reads_only_what_the_last_calls_responses_did_not(
    tiny_lm, tiny_tokenizer, tmp_path, head
):
    torch.manual_seed(4)
    model = TokenValueModel.from_causal_lm(str(tiny_lm), head=head)
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    model.save(tmp_path / "v", tiny_tokenizer)
    ensemble = ValueEnsemble.load([tmp_path / "v"], [1.0], max_length=64, batch_size=3)
    member = ensemble.members[0]
    ensemble.score(["the list", "a file"], ["returns a value", "the list of"], [False, False])
    read = []
    continue_responses = member.model.continue_responses
    member.model.continue_responses = lambda *a: (
        read.append([len(r) for r in a[2]]) or (continue_responses(*a))
    )
    prompts = ["the list", "a file", "the list", "a file", "the list"]
    responses = ["returns a value of the file", "the data", "returns a value", "", "one"]
    ended = [True, False, False, False, False]
    scores = ensemble.score(prompts, responses, ended)
    # 3 new tokens + EOS after the parent; 1 token after the shared "the"; the exact repeat and
    # the empty response read nothing; "one" shares nothing
    assert sorted(n for batch in read for n in batch) == [1, 1, 4]
    expected = []
    for p, r, e in zip(prompts, responses, ended, strict=True):
        ids = torch.tensor([encode_pair(tiny_tokenizer, p, r, e, 64).input_ids])
        expected.append(model(ids, torch.ones_like(ids))[0, -1].item())
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_reading_past_a_sliding_window_is_refused(tiny_lm, tiny_tokenizer):
    model = TokenValueModel.from_causal_lm(str(tiny_lm)).eval()
    prompt, _ = model.prefill([tiny_tokenizer("the list of data").input_ids])
    model.config.text_config.sliding_window = 5
    with pytest.raises(ValueError, match=r"beyond the value trunk's sliding window \(5\)"):
        model.continue_responses([prompt], [ResponseKV.empty(prompt)], [[5, 6]])
