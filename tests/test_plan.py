"""`iro check --plan`: the paper configs' needs, worked out offline from the config alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iro.app import cli
from iro.app.plan_text import format_plan
from iro.core.config import load_config, parse_config
from iro.pipeline.plan import (
    GPUS,
    KNOWN_MODELS,
    NOT_FOUND,
    build_plan,
    find_shape,
    generation_stage,
    run_models,
    run_work,
    training_stage,
)

CONFIGS = Path(__file__).parents[1] / "configs"
PAPER_CONFIGS = ["paper-tldr.yaml", "paper-ultrafeedback.yaml"]


def small_config(**sections) -> dict:
    """A hand-sized run: 10 prompts, 3 plain samples, w=2 x k=3 chunks, 7 new tokens."""
    base = {
        "iterations": 3,
        "policy": {"max_model_len": 64, "prompts_per_call": 5},
        "data": {"prompts_per_iteration": 10, "eval_prompts": 4},
        "sampling": {"max_new_tokens": 7},
        "rollout": {"samples": 3},
        "search": {"beams": 2, "children": 3, "chunk_tokens": 2},
        "value": {"prior": "none", "target": "reward"},
        "reweight": {"scheme": "argmax"},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return base


def stage_parts(stage) -> dict[str, int]:
    """A stage's memory lines by name (up to any colon)."""
    return {name.split(":")[0]: size for name, size in stage.parts}


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_plan_runs_offline_on_the_paper_configs(name, monkeypatch, capsys):
    def no_input_checks(*args):
        raise AssertionError("--plan must not load models or datasets")

    monkeypatch.setattr(cli, "_check_run", no_input_checks)
    assert cli.main(["check", str(CONFIGS / name), "--plan", "--gpu", "a100"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(CONFIGS / name)
    for model in (cfg.policy.model, cfg.value.backbone, cfg.reward.components[0].options["model"]):
        assert model in out
    assert "unknown size (" not in out  # the paper's models are all in the table
    assert "Estimated hours on one A100" in out
    assert out.rstrip().splitlines()[-1].split()[0] == "all"


def test_paper_configs_hold_the_paper_settings():
    tldr = load_config(CONFIGS / "paper-tldr.yaml")
    search = tldr.search
    assert (search.beams, search.children, search.chunk_tokens) == (4, 4, 8)
    assert (tldr.sampling.temperature, tldr.sampling.max_new_tokens) == (0.7, 53)
    assert (tldr.iterations, tldr.data.prompts_per_iteration) == (3, 8192)
    training = tldr.value.training
    assert training.learning_rate == 3e-6 and training.num_train_epochs == 10
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 256
    uf = load_config(CONFIGS / "paper-ultrafeedback.yaml")
    assert (uf.search.chunk_tokens, uf.sampling.temperature, uf.sampling.top_p) == (16, 0.6, 0.9)
    assert uf.value.betas(3) == [1.0, 2.0, 2.5] and uf.report.alpaca_eval


def test_the_ivl_transfer_config_trains_against_a_small_base_and_decodes_a_larger_one():
    cfg = load_config(CONFIGS / "paper-ivl-transfer.yaml")
    assert cfg.ivl.train_base == cfg.ivl.backbone == "TinyLlama/TinyLlama_v1.1"
    assert cfg.policy.model == "meta-llama/Llama-2-7b-hf"  # same tokenizer: ids shared directly
    assert cfg.ivl.response_field == cfg.data.reference_field == "response"
    assert cfg.ivl.norm_penalty > 0 and not cfg.data.use_chat_template


def test_token_counts_follow_the_formulas():
    cfg = parse_config(small_config())
    prompt = 64 - 7  # the longest prompt the run accepts
    work = {w.label: w for w in run_work(cfg)}
    first, third = work["iteration 1"], work["iteration 3"]
    assert first.generated == 10 * 3 * 7  # prompts x rollout.samples x max_new_tokens
    assert (first.value_models, first.value_tokens) == (0, 0)
    assert third.generated == 10 * 2 * 3 * 7  # prompts x beams x children x max_new_tokens
    assert third.value_tokens == 2 * 10 * (prompt + 2 * 3 * 7)  # V_1, V_2 read every candidate
    assert third.reward_tokens == 10 * 6 * (prompt + 7)
    assert third.trained_tokens == 10 * (prompt + 7) * cfg.value.training.num_train_epochs
    assert work["eval iro-iter3"].value_models == 3
    assert work["eval bon-6"].generated == 4 * 6 * 7


def test_memory_grows_with_batch_and_model_size():
    small = parse_config(small_config(value={"training": {"per_device_train_batch_size": 2}}))
    large = parse_config(small_config(value={"training": {"per_device_train_batch_size": 4}}))
    act = [stage_parts(training_stage(c, run_models(c)))["activations"] for c in (small, large)]
    assert act[1] == 2 * act[0]

    kv = []
    for per_call in (5, 10):
        cfg = parse_config(small_config(policy={"prompts_per_call": per_call}))
        kv.append(stage_parts(generation_stage(cfg, run_models(cfg)))["KV cache"])
    assert kv[1] == 2 * kv[0]

    fp32 = run_models(parse_config(small_config(policy={"dtype": "float32"})))[0]
    bf16 = run_models(parse_config(small_config(policy={"dtype": "bfloat16"})))[0]
    assert fp32.weight_bytes == 2 * bf16.weight_bytes
    pythia, llama = (
        KNOWN_MODELS["EleutherAI/pythia-1b-deduped"],
        KNOWN_MODELS["meta-llama/Meta-Llama-3-8B-Instruct"],
    )
    assert pythia.params() < llama.params()
    trainer = {m: m.params(lm_head=False) * 16 for m in (pythia, llama)}  # fp32 + grads + AdamW
    assert trainer[llama] > GPUS["h100"].memory_gib * 2**30 > trainer[pythia]


def test_value_scoring_is_costed_at_its_score_dtype_and_its_weights_stay_float32():
    plans = {
        dtype: build_plan(
            load_config(CONFIGS / "paper-tldr.yaml", {"value.score_dtype": dtype}), "test"
        )
        for dtype in ("float32", "bfloat16")
    }
    value = {d: next(m for m in plan.models if m.role == "value") for d, plan in plans.items()}
    assert value["float32"].weight_bytes == value["bfloat16"].weight_bytes
    assert value["bfloat16"].matmul_dtype == "bfloat16"
    search = {d: stage_parts(generation_stage(p.cfg, p.models)) for d, p in plans.items()}
    copy = search["bfloat16"]["bfloat16 copy of one, while it scores (autocast)"]
    assert copy * 2 == value["bfloat16"].weight_bytes  # autocast caches the member scoring now
    assert not any("copy" in part for part in search["float32"])
    hours = {d: plan.hours[-1]["value scoring"] for d, plan in plans.items()}
    gpu = GPUS["h100"]
    assert hours["float32"] / hours["bfloat16"] == pytest.approx(gpu.bf16_tflops / gpu.fp32_tflops)
    reward = {d: plan.hours[-1]["reward"] for d, plan in plans.items()}
    assert reward["float32"] == reward["bfloat16"]  # a reward model's dtype is its own option


def test_reward_scoring_is_costed_at_the_components_dtype():
    data = load_config(CONFIGS / "paper-tldr.yaml").model_dump()
    assert data["reward"]["components"][0]["options"]["dtype"] == "bfloat16"
    bf16 = build_plan(parse_config(data), "test")
    del data["reward"]["components"][0]["options"]["dtype"]
    fp32 = build_plan(parse_config(data), "test")
    gpu = GPUS["h100"]
    ratio = fp32.hours[-1]["reward"] / bf16.hours[-1]["reward"]
    assert ratio == pytest.approx(gpu.bf16_tflops / gpu.fp32_tflops)
    assert fp32.stages == bf16.stages  # float32 weights either way


@pytest.mark.parametrize(
    ("hub_id", "published"),
    [
        ("EleutherAI/pythia-1b-deduped", 1.01e9),
        ("meta-llama/Meta-Llama-3-8B-Instruct", 8.03e9),
        ("meta-llama/Meta-Llama-3-70B-Instruct", 70.6e9),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 134.5e6),
    ],
)
def test_table_shapes_give_the_published_parameter_counts(hub_id, published):
    assert KNOWN_MODELS[hub_id].params() == pytest.approx(published, rel=0.01)


def test_an_unknown_hub_model_is_reported_not_an_error():
    cfg = parse_config(small_config(policy={"model": "nobody/no-such-model-xyz"}))
    plan = build_plan(cfg, "hand-made")
    policy = plan.models[0]
    assert (policy.params, policy.source) == (None, NOT_FOUND)
    text = format_plan(plan)
    assert f"unknown size ({NOT_FOUND})" in text and "(unknown sizes left out)" in text
    assert plan.hours[0]["generate"] is None and "?" in text


def test_sizes_come_from_a_local_config_json(tmp_path):
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 100,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape, source = find_shape(str(tmp_path))
    assert source == str(tmp_path / "config.json")
    attention = 64 * 16 * (2 * 4 + 2 * 2)
    assert shape.params() == 100 * 64 + 2 * (attention + 3 * 64 * 128)


def test_an_unconverted_embedded_model_is_sized_from_the_table(tmp_path):
    shape, source = find_shape("embedded:smollm2-135m-instruct", cache_dir=str(tmp_path))
    assert shape == KNOWN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert source == "table (HuggingFaceTB/SmolLM2-135M-Instruct)"


def test_a_reward_dtype_that_does_not_exist_stops_the_plan_naming_it(tmp_path, capsys):
    data = load_config(CONFIGS / "paper-tldr.yaml").model_dump(mode="json")
    data["reward"]["components"][0]["options"]["dtype"] = "bf16"
    config = tmp_path / "bad-dtype.yaml"
    config.write_text(json.dumps(data))  # JSON is YAML
    assert cli.main(["check", str(config), "--plan"]) == 2
    assert "dtype must be one of ('float32', 'bfloat16', 'float16'), got 'bf16'" in (
        capsys.readouterr().err
    )
