"""An artifact's id includes exactly the settings that can change its content.

The schema is walked leaf by leaf: every key must be accounted for in `iro.pipeline.identity`
(read by some stage, not content, or structure), and changing a key changes the config slice, and
so the id, of exactly the stages that read it.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import pytest
import torch
from pydantic import BaseModel

from iro.core.config import RunConfig, parse_config, set_dotted_key
from iro.core.store.local import ArtifactStore
from iro.pipeline import identity
from iro.pipeline.identity import STAGE_READS, config_slice, is_accounted_for, stages_reading

# Configs in which every optional section exists, so that its keys can be changed too.
WITH_ENDPOINT = {
    "policy": {"engine": "openai", "endpoint": {"base_url": "http://h/v1", "model": "m"}},
}
WITH_IMPLICIT = {"search": {"implicit_reward": {"tuned": "a", "untuned": "b"}}}

# Changed values for keys whose generic change would be invalid or a no-op.
SPECIAL = {
    "run_name": "other",
    "cache_dir": "/tmp/other-cache",
    "policy.engine": "hf",  # auto resolves to vllm where it is installed
    "policy.endpoint.api_key_env": "ENDPOINT_KEY",
    "data.split_field": "part",
    "reward.components": [{"type": "sentiment"}],
    "sampling.stop": ["\n\n"],
    "value.beta": [0.5, 2.0],
    "value.score_device": "cuda",
    "eval.baselines": ["base"],
    "report.methods": ["base"],
    "report.pairwise_judge": "summary",
    "report.max_prompts": 3,
    "report.judge.base_url": "http://judge/v1",
    "report.judge.api_key_secret": "judge-key",
    "ivl.response_field": "demonstration",
    "ivl.train_base": "embedded:other",
    "store.options": {"endpoint_url": "http://127.0.0.1:9000"},
    "value.lora.target_modules": ["q_proj"],
    "ray.address": "auto",
}


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _model_types(arg)]
    return []


def schema_leaves(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf key of the schema with its field annotation (optional sections walked into)."""
    leaves: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        submodels = _model_types(field.annotation)
        if submodels:
            leaves.update(schema_leaves(submodels[0], f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = field.annotation
    return leaves


def _base_for(key: str) -> dict[str, Any]:
    if key.startswith("policy.endpoint."):
        return WITH_ENDPOINT
    if key.startswith("search.implicit_reward."):
        return WITH_IMPLICIT
    if key.startswith("value.td."):
        return {"value": {"target": "td_lambda"}}
    if key.startswith("value.lora."):
        return {"value": {"lora": {}}}
    return {}


def _changed_value(key: str, annotation: Any, current: Any) -> Any:
    if key in SPECIAL:
        return SPECIAL[key]
    literal = [a for a in typing.get_args(annotation) or (annotation,) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return next(v for v in typing.get_args(annotation) if v != current)
    if isinstance(current, bool):
        return not current
    if isinstance(current, int) or int in literal:
        return (current or 0) + 1
    if isinstance(current, float):
        return current / 2 if current else 0.5
    if isinstance(current, str):
        return current + "-other"
    raise AssertionError(f"no change known for {key} = {current!r}; add it to SPECIAL")


def _value_at(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part] if isinstance(data, dict) else None
    return data


def _perturbed(key: str, annotation: Any) -> tuple[RunConfig, RunConfig]:
    base = parse_config(_base_for(key))
    data = base.model_dump()
    set_dotted_key(data, key, _changed_value(key, annotation, _value_at(data, key)))
    return base, parse_config(data)


def _changed_stages(before: RunConfig, after: RunConfig) -> set[str]:
    return {s for s in STAGE_READS if config_slice(before, s) != config_slice(after, s)}


LEAVES = schema_leaves()


@pytest.fixture(autouse=True)
def vllm_is_the_default_engine(monkeypatch):
    """Resolve `auto` as on a machine with vLLM, whether or not this one has it."""
    monkeypatch.setattr(identity, "resolve_backend", lambda e: "vllm" if e == "auto" else e)


def test_every_config_key_has_an_entry_in_the_identity_table():
    missing = [key for key in LEAVES if not is_accounted_for(key)]
    assert not missing, f"add these keys to iro/pipeline/identity.py: {missing}"


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_a_key_changes_exactly_the_ids_of_the_stages_that_read_it(key):
    before, after = _perturbed(key, LEAVES[key])
    assert before != after, f"the test did not change {key}"
    assert _changed_stages(before, after) == stages_reading(key)


def test_implicit_reward_changes_what_guided_search_produces():
    plain = RunConfig()
    cbs = parse_config(WITH_IMPLICIT)
    changed = _changed_stages(plain, cbs)
    assert {"guided_rollout", "eval-iro"} <= changed
    assert "value" not in changed and "eval-base" not in changed


def test_value_beta_does_not_retrain_the_value_model():
    changed = _changed_stages(RunConfig(), parse_config({"value": {"beta": 0.5}}))
    assert "value" not in changed and {"guided_rollout", "eval-iro", "eval-vas"} <= changed


def test_switching_engine_does_not_reuse_the_other_engines_samples():
    store = ArtifactStore("unused")
    hf, vllm = (
        parse_config({"policy": {"engine": "hf"}}),
        parse_config({"policy": {"engine": "vllm"}}),
    )
    for stage in ("sample_rollout", "guided_rollout", "eval-base", "eval-bon", "eval-iro"):
        ids = {store.artifact_id("s", 1, config_slice(c, stage), []) for c in (hf, vllm)}
        assert len(ids) == 2, stage
    assert config_slice(hf, "value") == config_slice(vllm, "value")


def test_on_the_transformers_engine_the_prompt_grouping_is_part_of_what_it_samples():
    def grouped(engine: str, per_call: int) -> RunConfig:
        return parse_config({"policy": {"engine": engine, "prompts_per_call": per_call}})

    assert _changed_stages(grouped("hf", 32), grouped("hf", 8)) == stages_reading("policy.engine")
    assert _changed_stages(grouped("vllm", 32), grouped("vllm", 8)) == set()


def test_memory_knobs_do_not_change_what_a_stage_is():
    small = parse_config({"policy": {"cpu_kv_cache_gib": 1, "gpu_memory_utilization": 0.2}})
    large = parse_config({"policy": {"cpu_kv_cache_gib": 4, "gpu_memory_utilization": 0.9}})
    assert _changed_stages(small, large) == set()


def test_only_the_betas_of_the_guiding_value_models_count():
    three = {"iterations": 3, "value": {"beta": [1.0, 1.0, 1.0]}}
    other_third = {"iterations": 3, "value": {"beta": [1.0, 1.0, 5.0]}}
    a, b = parse_config(three), parse_config(other_third)
    assert config_slice(a, "guided_rollout", value_models=2) == config_slice(
        b, "guided_rollout", value_models=2
    )
    assert config_slice(a, "eval-iro", value_models=3) != config_slice(
        b, "eval-iro", value_models=3
    )


def test_token_level_methods_do_not_depend_on_the_search_engine():
    hf, vllm = (
        parse_config({"policy": {"engine": "hf"}}),
        parse_config({"policy": {"engine": "vllm"}}),
    )
    for stage in ("eval-args", "eval-vas"):
        assert config_slice(hf, stage) == config_slice(vllm, stage)


def test_td_settings_count_only_with_td_targets():
    plain = parse_config({"value": {"td": {"trace_decay": 0.5}}})
    assert "value" not in _changed_stages(RunConfig(), plain)
    td = parse_config({"value": {"target": "td_lambda"}})
    td_other = parse_config({"value": {"target": "td_lambda", "td": {"trace_decay": 0.5}}})
    assert "value" in _changed_stages(td, td_other)


def test_a_search_sharded_over_ray_records_the_workers_device():
    on_gpus = parse_config({"ray": {"workers": 2, "gpus_per_worker": 1}})
    on_cpus = parse_config({"ray": {"workers": 2}})
    local = "cuda" if torch.cuda.is_available() else "cpu"
    for stage in ("sample_rollout", "guided_rollout", "eval-iro", "eval-bon"):
        assert config_slice(on_gpus, stage)["device"] == "cuda", stage
        assert config_slice(on_cpus, stage)["device"] == "cpu", stage
    # value training and token-level decoding run in this process, whatever the workers have
    for stage in ("value", "eval-vas"):
        assert config_slice(on_gpus, stage)["device"] == local, stage
