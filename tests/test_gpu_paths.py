"""The scale-out paths a config selects, checked on CPU with the tiny model: tensor-parallel vLLM
(its validation only), compiled vLLM (its validation; tests/test_end_to_end.py runs it), value
scoring's device (its validation), LoRA value training, data-parallel value training under
torchrun, DeepSpeed's early error and example config, and gradient checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch

from iro.core.config import ConfigError, parse_config
from iro.core.engines.vllm_engine import VLLMEngine, tensor_parallel_kwargs
from iro.pipeline.value_training import (
    check_processes,
    launched,
    lora_spec,
    train_value,
    training_arguments,
)
from iro.valuefn.model import LoraSpec, TokenValueModel
from iro.valuefn.scoring import ValueEnsemble
from iro.valuefn.training import ValueTrainingArguments, train_value_model
from tests.conftest import tiny_value_config

ROOT = Path(__file__).resolve().parents[1]
RESPONSES = [
    "returns a value",
    "list of file path",
    "one short sentence",
    "the name",
    "a new object",
    "returns the string",
    "data for this class",
    "the method of a function",
]


def value_rows(count: int = 8) -> datasets.Dataset:
    """One response per row, targets spread over [-1, 1]."""
    return datasets.Dataset.from_dict(
        {
            "prompt_text": ["the document"] * count,
            "responses": [[r] for r in RESPONSES[:count]],
            "ended": [[i % 3 != 0] for i in range(count)],
            "targets": [[-1.0 + 2.0 * i / (count - 1)] for i in range(count)],
            "weights": [[1.0 + (i % 2)] for i in range(count)],
        }
    )


def arguments(tmp_path: Path, **overrides) -> ValueTrainingArguments:
    given = dict(
        output_dir=str(tmp_path / "work"), learning_rate=1e-2, num_train_epochs=1,
        per_device_train_batch_size=4, use_cpu=True, disable_tqdm=True, report_to="none",
        max_length=64, seed=0,
    )  # fmt: skip
    return ValueTrainingArguments(**{**given, **overrides})


def fresh_model(tiny_lm: Path) -> TokenValueModel:
    torch.manual_seed(0)
    return TokenValueModel.from_causal_lm(str(tiny_lm))


def values_of(model: TokenValueModel, tokenizer) -> torch.Tensor:
    ids = torch.tensor([tokenizer("the document returns a value of the list").input_ids])
    with torch.no_grad():
        return model.eval()(ids, torch.ones_like(ids))


# -- policy.tensor_parallel_size --


def test_tensor_parallel_size_one_passes_nothing_to_vllm():
    assert tensor_parallel_kwargs(1, cuda_devices=0) == {}
    assert tensor_parallel_kwargs(1, cuda_devices=4) == {}


def test_tensor_parallel_size_splits_only_across_the_gpus_there_are():
    assert tensor_parallel_kwargs(2, cuda_devices=2) == {"tensor_parallel_size": 2}
    with pytest.raises(ConfigError, match=r"policy.tensor_parallel_size is 2.*no CUDA device"):
        tensor_parallel_kwargs(2, cuda_devices=0)
    with pytest.raises(ConfigError, match=r"policy.tensor_parallel_size is 4.*has 2 CUDA"):
        tensor_parallel_kwargs(4, cuda_devices=2)


def test_compiling_the_policy_is_for_vllm_only():
    assert parse_config({"policy": {"compile": True}}).policy.compile
    with pytest.raises(ConfigError, match=r"policy\.compile compiles vLLM's model; engine hf"):
        parse_config({"policy": {"engine": "hf", "compile": True}})


def test_value_scoring_runs_on_a_named_device_only(tiny_lm, tiny_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match=r"value\.score_device"):
        parse_config({"value": {"score_device": "gpu"}})
    assert parse_config({"value": {"score_device": "cuda:1"}}).value.score_device == "cuda:1"
    TokenValueModel.from_causal_lm(str(tiny_lm)).save(tmp_path / "v", tiny_tokenizer)
    on_cpu = ValueEnsemble.load([tmp_path / "v"], [1.0], 64, 4, device="cpu")
    assert on_cpu.score(["the list"], ["returns a value"], [True]).shape == (1,)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"value\.score_device is cuda, but this machine"):
            ValueEnsemble.load([tmp_path / "v"], [1.0], 64, 4, device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check passes on a GPU machine")
def test_the_vllm_engine_refuses_tensor_parallelism_before_starting_vllm():
    with pytest.raises(ConfigError, match=r"policy\.tensor_parallel_size"):
        VLLMEngine(
            "no-model-needed", dtype="float32", max_model_len=64, gpu_memory_utilization=0.3,
            cpu_kv_cache_gib=1, trust_remote_code=False, seed=0, tensor_parallel_size=2,
        )  # fmt: skip


# -- value.lora --


def test_with_lora_only_the_adapters_and_the_head_train(tiny_lm):
    model = fresh_model(tiny_lm)
    model.add_lora(LoraSpec(r=4, target_modules=("q_proj", "v_proj")))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    # per layer: q_proj 32 -> 32 and v_proj 32 -> 16 (2 of 4 key-value heads of 8), r * (in + out)
    per_layer = 4 * (32 + 32) + 4 * (32 + 16)
    assert sum(trainable.values()) == 2 * per_layer + (32 + 1)  # 2 layers, scalar head + bias
    assert {n for n in trainable if "lora_" not in n} == {"value_head.weight", "value_head.bias"}


def test_lora_adapters_merge_into_the_plain_layout_with_the_same_outputs(tiny_lm, tiny_tokenizer):
    model = fresh_model(tiny_lm)
    plain_keys = set(model.state_dict())
    model.add_lora(LoraSpec(r=4))
    with torch.no_grad():  # as if trained: peft starts B at zero, which would change nothing
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    with_adapters = values_of(model, tiny_tokenizer)
    model.merge_lora()
    assert set(model.state_dict()) == plain_keys
    torch.testing.assert_close(values_of(model, tiny_tokenizer), with_adapters)


def test_lora_training_saves_a_plain_value_model_that_loads_as_trained(
    tiny_lm, tiny_tokenizer, tmp_path
):
    initial = values_of(fresh_model(tiny_lm), tiny_tokenizer)
    model = fresh_model(tiny_lm)
    spec = LoraSpec(r=4, alpha=8.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    train_value_model(model, tiny_tokenizer, value_rows(), arguments(tmp_path), lora=spec)
    model.save(tmp_path / "v", tiny_tokenizer)
    loaded = TokenValueModel.load(tmp_path / "v")
    trained = values_of(model, tiny_tokenizer)
    torch.testing.assert_close(values_of(loaded, tiny_tokenizer), trained)
    assert not torch.allclose(trained, initial, atol=1e-3)
    # only the adapted layers (and the head) moved; the MLP was frozen
    fresh = fresh_model(tiny_lm).state_dict()
    state = loaded.state_dict()
    assert not torch.equal(state["trunk.layers.0.self_attn.q_proj.weight"],
                           fresh["trunk.layers.0.self_attn.q_proj.weight"])  # fmt: skip
    torch.testing.assert_close(
        state["trunk.layers.0.mlp.up_proj.weight"], fresh["trunk.layers.0.mlp.up_proj.weight"]
    )


def test_lora_on_a_layer_the_trunk_lacks_is_refused(tiny_lm):
    model = fresh_model(tiny_lm)
    with pytest.raises(ValueError, match=r"value.lora.target_modules: \['query_key_value'\]"):
        model.add_lora(LoraSpec(target_modules=("q_proj", "query_key_value")))


def test_the_pipeline_reads_value_lora_as_a_lora_spec():
    assert lora_spec(parse_config({})) is None
    lora = {"r": 8, "alpha": 16, "target_modules": ["q_proj"]}
    assert lora_spec(parse_config({"value": {"lora": lora}})) == LoraSpec(8, 16.0, 0.0, ("q_proj",))


# -- value.processes --

TABLE = pd.DataFrame(
    {
        "prompt_text": ["the document"] * 8,
        "response": RESPONSES,
        "ended": [i % 3 != 0 for i in range(8)],
        "reward": [1.0, -1.0, 0.5, 0.0, 0.25, -0.5, 0.75, -0.25],
        "prompt_mean_reward": [0.09375] * 8,
        "weight": [1.0, 2.0, 1.0, 0.5, 1.5, 1.0, 1.0, 1.0],
    }
)


def processes_config(tiny_lm: Path, processes: int, batch: int):
    return tiny_value_config(
        tiny_lm,
        {"target": "reward", "processes": processes},
        {"per_device_train_batch_size": batch, "learning_rate": 1e-3},
    )


@pytest.mark.skipif(
    0 < torch.cuda.device_count() < 2, reason="2 processes need 2 GPUs where there is CUDA"
)
def test_two_processes_train_as_one_with_the_batch_of_both(tiny_lm, tmp_path):
    """Data parallelism is exact for this loss when every shard holds as many responses.

    The loss of a batch is the mean over its responses of w_i * (mean squared error over the
    response's states): each response is one term of the mean whatever its length. DDP averages
    the two processes' gradients, so a step on shards S1, S2 follows grad(mean over S1) / 2 +
    grad(mean over S2) / 2, which is grad(mean over S1 + S2) exactly when |S1| = |S2|. With one
    response per row and 8 rows, the global batch 2 x 2 splits into two shards of 2 responses
    (of the same seeded permutation: its first 2 to process 0, the next 2 to process 1), so 2
    processes of batch 2 take the same 4 steps as one of batch 4, up to float summation order.
    Packed rows with unequal candidate counts, or a last batch the sampler has to pad, would
    break the equality. The 2-process job is then launched again in its work directory, as
    after a kill, and resumes from its last checkpoint.
    """
    train_value(processes_config(tiny_lm, 1, 4), TABLE, None, tmp_path / "one", tmp_path / "w1")
    metrics = train_value(
        processes_config(tiny_lm, 2, 2), TABLE, None, tmp_path / "two", tmp_path / "w2"
    )
    assert metrics["steps"] == 4  # 8 rows / (2 x 2) per step, 2 epochs
    assert (tmp_path / "w2" / "launch" / "rows.parquet").is_file()
    one = TokenValueModel.load(tmp_path / "one").state_dict()
    two = TokenValueModel.load(tmp_path / "two").state_dict()
    initial = TokenValueModel.load(tmp_path / "w2" / "launch" / "initial").state_dict()
    assert not torch.allclose(two["value_head.weight"], initial["value_head.weight"])
    for name, weight in one.items():
        torch.testing.assert_close(two[name], weight, rtol=1e-5, atol=1e-6, msg=name)
    # launched again (a process killed before it saved the model): resumes at the last step
    again = train_value(
        processes_config(tiny_lm, 2, 2), TABLE, None, tmp_path / "again", tmp_path / "w2"
    )
    assert (again["resumed_from_step"], again["steps_run"], again["steps"]) == (4, 0, 4)
    resumed = TokenValueModel.load(tmp_path / "again").state_dict()
    for name, weight in two.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=0, msg=name)


def test_processes_take_a_gpu_each_or_share_the_cpu():
    check_processes(2, cuda_devices=0)  # gloo on the CPU
    check_processes(2, cuda_devices=2)
    with pytest.raises(ConfigError, match=r"value\.processes is 2, but .* 1 CUDA devices"):
        check_processes(2, cuda_devices=1)


def test_processes_or_deepspeed_select_the_torchrun_job(tiny_lm):
    assert not launched(processes_config(tiny_lm, 1, 4))
    assert launched(processes_config(tiny_lm, 2, 2))
    assert launched(parse_config({"value": {"training": {"deepspeed": "zero2.json"}}}))


# -- DeepSpeed --


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("deepspeed") is not None,
    reason="DeepSpeed is installed",
)
def test_deepspeed_without_the_package_stops_at_the_config(tmp_path):
    cfg = parse_config({"value": {"training": {"deepspeed": "configs/deepspeed/zero2.json"}}})
    with pytest.raises(ConfigError, match="pip install deepspeed on the GPU machine"):
        training_arguments(cfg, tmp_path)


def test_the_example_zero2_config_leaves_the_batch_and_precision_to_the_trainer():
    config = json.loads((ROOT / "configs" / "deepspeed" / "zero2.json").read_text())
    assert config["zero_optimization"]["stage"] == 2
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert config[key] == "auto"
    assert config["bf16"]["enabled"] == "auto"


# -- gradient checkpointing --


def test_gradient_checkpointing_recomputes_the_trunk_and_trains_the_same_step(
    tiny_lm, tiny_tokenizer, tmp_path, monkeypatch
):
    from transformers import modeling_utils

    calls = []
    checkpoint = modeling_utils.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counted)
    plain = fresh_model(tiny_lm)
    train_value_model(plain, tiny_tokenizer, value_rows(), arguments(tmp_path / "a", max_steps=1))
    assert not calls
    recomputed = fresh_model(tiny_lm)
    args = arguments(tmp_path / "b", max_steps=1, gradient_checkpointing=True)
    train_value_model(recomputed, tiny_tokenizer, value_rows(), args)
    assert len(calls) == 2  # each of the 2 layers, in the one forward of the one step
    for (name, a), b in zip(
        recomputed.state_dict().items(), plain.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_gradient_checkpointing_reaches_lora_adapters_behind_a_frozen_embedding(
    tiny_lm, tiny_tokenizer, tmp_path
):
    model = fresh_model(tiny_lm)
    before = model.state_dict()["trunk.layers.1.self_attn.q_proj.weight"].clone()
    args = arguments(tmp_path, max_steps=1, gradient_checkpointing=True)
    train_value_model(model, tiny_tokenizer, value_rows(), args, lora=LoraSpec(r=4))
    # B (zero at first) gets a gradient only through the recomputed layer, whose input comes from
    # the frozen embedding; without input gradients it would stay zero and the merge change nothing
    after = model.state_dict()["trunk.layers.1.self_attn.q_proj.weight"]
    assert not torch.allclose(after, before)
