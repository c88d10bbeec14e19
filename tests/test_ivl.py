"""Inverse Value Learning on tiny models: the residual, its loss, training, saving, decoding."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch

from iro.valuefn.residual import ResidualValueNetwork, guided_log_probs, residual_delta
from iro.valuefn.residual_decoding import decode_with_residual
from iro.valuefn.residual_training import (
    DemonstrationCollator,
    ResidualTrainingArguments,
    residual_loss,
    train_residual,
)
from iro.valuefn.token_guidance import TokenGuidanceSettings
from iro.valuefn.vocab_map import VocabularyMap

DEMOS = [
    ("the function returns a list", "a short summary of the list"),
    ("the class is a new object", "a short summary of the object"),
    ("this method returns the path", "a short summary of the path"),
    ("the file is data", "a short summary of the data"),
]
PROMPTS = ["the function returns a list", "this method", "the file is data of the name"]


def demonstrations() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"prompt_text": [p for p, _ in DEMOS], "response": [r for _, r in DEMOS]}
    )


def load_lm(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def training_args(tmp_path: Path, **overrides) -> ResidualTrainingArguments:
    settings = dict(
        output_dir=str(tmp_path / "trainer"),
        learning_rate=1e-2,
        num_train_epochs=20,
        per_device_train_batch_size=4,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        max_length=64,
        seed=0,
    )
    return ResidualTrainingArguments(**{**settings, **overrides})


def train_tiny_residual(lm_path: Path, tmp_path: Path, connection: str = "logits"):
    """A 1-layer residual trained on DEMOS against the base at `lm_path`: (residual, metrics)."""
    from transformers import AutoTokenizer

    residual = ResidualValueNetwork.from_causal_lm(str(lm_path), 1, connection)
    metrics = train_residual(
        residual,
        load_lm(lm_path),
        AutoTokenizer.from_pretrained(lm_path),
        demonstrations(),
        training_args(tmp_path),
        norm_penalty=0.01,
    )
    return residual, metrics


def demo_nll(base, tokenizer, residual: ResidualValueNetwork | None) -> float:
    """Mean NLL of the DEMOS' response tokens under base (+ residual on the same token ids)."""
    batch = DemonstrationCollator(tokenizer, 64)(
        [{"prompt_text": p, "response": r} for p, r in DEMOS]
    )
    with torch.no_grad():
        base_logits = base(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        residual_logits = (
            residual(batch["input_ids"], batch["attention_mask"])
            if residual is not None
            else torch.zeros_like(base_logits)
        )
    parts = residual_loss(
        base_logits, residual_logits, batch["input_ids"], batch["response_mask"], "logits", 0.0
    )
    return parts.nll.item()


@torch.no_grad()
def checksum(model: torch.nn.Module) -> float:
    return float(sum(p.double().abs().sum() + p.double().sum() for p in model.parameters()))


def randomise_head(residual: ResidualValueNetwork, seed: int = 0, scale: float = 2.0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        residual.head.weight.normal_(std=scale / math.sqrt(residual.head.in_features))


@pytest.fixture(scope="module")
def trained(tiny_lm, tmp_path_factory):
    """The base's checksum before training, the trained residual and its metrics."""
    before = checksum(load_lm(tiny_lm))
    residual, metrics = train_tiny_residual(tiny_lm, tmp_path_factory.mktemp("ivl"))
    return before, residual, metrics


# the residual and its formula


@pytest.mark.parametrize("connection", ["logits", "log_probs"])
def test_untrained_residual_gives_back_the_base_distribution(tiny_lm, tiny_tokenizer, connection):
    base = load_lm(tiny_lm)
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1, connection)
    ids = tiny_tokenizer(["the function returns a list of data"], return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    with torch.no_grad():
        base_logits = base(input_ids=ids, attention_mask=mask).logits
        guided = guided_log_probs(base_logits, residual(ids, mask), connection)
    assert torch.equal(guided, torch.log_softmax(base_logits, dim=-1))


def test_the_two_connections_give_one_distribution_on_one_vocabulary():
    torch.manual_seed(0)
    base, residual = torch.randn(3, 7) * 3, torch.randn(3, 7) * 3
    by_logits = guided_log_probs(base, residual, "logits")
    by_log_probs = guided_log_probs(base, residual, "log_probs")
    assert torch.allclose(by_logits, by_log_probs, atol=1e-5)
    assert not torch.allclose(by_logits, torch.log_softmax(base, -1), atol=1e-2)


def test_an_offset_of_the_residual_reaches_only_the_logits_connection_in_transfer():
    """Token 2 of the target has no source match (delta 0): a constant added to r moves it
    against the mapped tokens under `logits`, not under `log_probs`."""
    vocab_map = VocabularyMap(3, 3, torch.tensor([0, 1, 3]), shared_ids=False)
    base, residual = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.3, -0.2, 0.9])
    for connection, moved in (("logits", True), ("log_probs", False)):
        plain = guided_log_probs(base, residual, connection, vocab_map)
        shifted = guided_log_probs(base, residual + 5.0, connection, vocab_map)
        assert (not torch.allclose(plain, shifted, atol=1e-4)) is moved, connection


def test_the_log_probs_penalty_ignores_offsets_and_the_logits_penalty_does_not():
    residual = torch.tensor([[0.3, -0.2, 0.9]])
    for connection, moved in (("logits", True), ("log_probs", False)):
        plain = residual_delta(residual, connection).pow(2).mean()
        shifted = residual_delta(residual + 5.0, connection).pow(2).mean()
        assert (not torch.isclose(plain, shifted)) is moved, connection


# the loss


def test_the_loss_is_the_nll_of_the_response_tokens_on_a_hand_made_case():
    # tokens [0, 1, 2]; token 0 is the prompt, tokens 1 and 2 the response
    base = torch.log(torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]))
    residual = torch.zeros(1, 3, 3)
    residual[0, 0, 1] = math.log(2.0)  # doubles the odds of token 1 after token 0
    ids, response = torch.tensor([[0, 1, 2]]), torch.tensor([[False, True, True]])
    parts = residual_loss(base, residual, ids, response, "logits", norm_penalty=0.0)
    p1 = 0.5 * 2 / (0.2 + 0.5 * 2 + 0.3)  # token 1 after the prompt, reweighted
    expected = -(math.log(p1) + math.log(0.8)) / 2
    assert parts.loss.item() == pytest.approx(expected, rel=1e-6)


def test_the_norm_penalty_adds_its_weight_times_the_mean_square_delta_at_response_positions():
    torch.manual_seed(0)
    base, residual = torch.randn(1, 4, 5), torch.randn(1, 4, 5)
    ids, response = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[False, False, True, True]])
    plain = residual_loss(base, residual, ids, response, "logits", 0.0).loss
    penalised = residual_loss(base, residual, ids, response, "logits", 0.5).loss
    # response tokens 2 and 3 are predicted at positions 1 and 2
    assert (penalised - plain).item() == pytest.approx(0.5 * residual[0, 1:3].pow(2).mean().item())


# training


def test_training_lowers_the_nll_of_the_demonstrations(trained, tiny_lm, tiny_tokenizer):
    _, residual, metrics = trained
    base = load_lm(tiny_lm)
    before, after = demo_nll(base, tiny_tokenizer, None), demo_nll(base, tiny_tokenizer, residual)
    assert after < before - 1.0, (before, after)
    assert metrics["last_logged_nll"] < metrics["first_logged_nll"]
    assert metrics["mean_abs_delta"] > 0 and metrics["examples"] == len(DEMOS)


def test_training_leaves_the_base_weights_unchanged(trained, tiny_lm):
    before, _, _ = trained
    assert checksum(load_lm(tiny_lm)) == before


def test_training_the_base_object_itself_leaves_it_unchanged(tiny_lm, tiny_tokenizer, tmp_path):
    base = load_lm(tiny_lm)
    before = checksum(base)
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    train_residual(
        residual, base, tiny_tokenizer, demonstrations(), training_args(tmp_path, max_steps=2), 0.01
    )
    assert checksum(base) == before and all(p.grad is None for p in base.parameters())


def test_training_refuses_empty_data(tiny_lm, tiny_tokenizer, tmp_path):
    empty = datasets.Dataset.from_dict({"prompt_text": [], "response": []})
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    with pytest.raises(ValueError, match="no demonstrations"):
        train_residual(
            residual, load_lm(tiny_lm), tiny_tokenizer, empty, training_args(tmp_path), 0.0
        )


def test_training_names_missing_columns(tiny_lm, tiny_tokenizer, tmp_path):
    rows = datasets.Dataset.from_dict({"prompt_text": ["the list"], "completion": ["a value"]})
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    with pytest.raises(ValueError, match=r"lack columns \['response'\]"):
        train_residual(
            residual, load_lm(tiny_lm), tiny_tokenizer, rows, training_args(tmp_path), 0.0
        )


def test_training_arguments_refuse_sft_options_the_loss_does_not_implement(tmp_path):
    with pytest.raises(ValueError, match="packing"):
        training_args(tmp_path, packing=True)


# saving


def test_save_load_round_trip_reads_no_pickle(tiny_lm, tiny_tokenizer, tmp_path, monkeypatch):
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1, "log_probs")
    randomise_head(residual)
    residual.save(tmp_path / "residual", tiny_tokenizer)

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = ResidualValueNetwork.load(tmp_path / "residual")
    ids = tiny_tokenizer(["the list of data"], return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), residual.eval()(ids, mask))
    assert loaded.connection == "log_probs" and loaded.config.text_config.num_hidden_layers == 1
    assert not [p for p in (tmp_path / "residual").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]


# decoding


def decode(base, tokenizer, residual, prompts, seeds, **settings):
    return decode_with_residual(
        base, tokenizer, residual, tokenizer, prompts,
        TokenGuidanceSettings(**{"top_k": 50, "max_new_tokens": 8, **settings}), seeds,
    )  # fmt: skip


def test_decoding_with_a_zero_residual_equals_decoding_the_base_alone(tiny_lm, tiny_tokenizer):
    base = load_lm(tiny_lm)
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    seeds = [3, 4, 5]
    alone = decode(base, tiny_tokenizer, None, PROMPTS, seeds)
    assert decode(base, tiny_tokenizer, residual, PROMPTS, seeds) == alone
    assert decode(base, tiny_tokenizer, None, PROMPTS, [6, 7, 8]) != alone  # the seeds matter


def test_greedy_decoding_of_the_base_alone_matches_transformers_generate(tiny_lm, tiny_tokenizer):
    base = load_lm(tiny_lm)
    outputs = decode(base, tiny_tokenizer, None, PROMPTS, [0, 0, 0], greedy=True)
    for prompt, (response, ended) in zip(PROMPTS, outputs, strict=True):
        ids = tiny_tokenizer([prompt], return_tensors="pt").input_ids
        generated = base.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
            eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=0,
        )[0, ids.shape[1]:].tolist()  # fmt: skip
        expected = generated[: generated.index(1)] if 1 in generated else generated
        assert (response, ended) == (expected, 1 in generated)


def test_cached_guided_decoding_equals_recomputing_every_step(tiny_lm, tiny_tokenizer):
    base = load_lm(tiny_lm)
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    randomise_head(residual, scale=20.0)
    ((response, _),) = decode(base, tiny_tokenizer, residual, PROMPTS[:1], [0], greedy=True)
    ids = tiny_tokenizer(PROMPTS[:1], return_tensors="pt").input_ids
    expected = []
    with torch.no_grad():
        for _ in range(len(response)):
            mask = torch.ones_like(ids)
            log_probs = guided_log_probs(
                base(input_ids=ids, attention_mask=mask).logits[0, -1],
                residual(ids, mask)[0, -1], "logits",
            )  # fmt: skip
            expected.append(int(log_probs.argmax()))
            ids = torch.cat([ids, torch.tensor([[expected[-1]]])], dim=1)
    assert (
        response == expected
        and response != decode(base, tiny_tokenizer, None, PROMPTS[:1], [0], greedy=True)[0][0]
    )


def test_a_prompts_output_does_not_depend_on_the_batch(tiny_lm, tiny_tokenizer):
    base = load_lm(tiny_lm)
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    randomise_head(residual)
    seeds = [11, 12, 13]
    batched = decode(base, tiny_tokenizer, residual, PROMPTS, seeds)
    alone = [
        decode(base, tiny_tokenizer, residual, [p], [s])[0]
        for p, s in zip(PROMPTS, seeds, strict=True)
    ]
    assert batched == alone
    assert decode(base, tiny_tokenizer, residual, PROMPTS[::-1], seeds[::-1]) == batched[::-1]


def test_decoding_refuses_a_residual_of_another_vocabulary_without_a_map(tiny_lm, tiny_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={"<eos>": 0, "<unk>": 1, "list": 2}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    other = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")
    residual = ResidualValueNetwork.from_causal_lm(str(tiny_lm), 1)
    with pytest.raises(ValueError, match="VocabularyMap"):
        decode_with_residual(
            load_lm(tiny_lm), tiny_tokenizer, residual, other, PROMPTS[:1],
            TokenGuidanceSettings(max_new_tokens=2), [0],
        )  # fmt: skip
