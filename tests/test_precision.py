"""`auto` precision: resolved when the config is read, to what this machine computes natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from iro.core import precision
from iro.core.config import load_config, parse_config
from iro.pipeline.identity import config_slice

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
AUTO = {"policy.dtype": "auto", "value.score_dtype": "auto", "value.training.bf16": "auto"}


@pytest.fixture(params=[True, False], ids=["bf16-native", "bf16-emulated"])
def native(request, monkeypatch) -> bool:
    monkeypatch.setattr(precision, "bf16_is_native", lambda device: request.param)
    return request.param


def test_auto_is_bf16_where_native_and_float32_elsewhere(native):
    cfg = load_config(CONFIGS / "demo.yaml", AUTO)
    expected = "bfloat16" if native else "float32"
    assert (cfg.policy.dtype, cfg.value.score_dtype) == (expected, expected)
    assert cfg.value.training.bf16 is native


@pytest.mark.parametrize("config", ["demo.yaml", "sentiment.yaml"])
def test_a_shipped_auto_config_has_the_ids_of_the_precision_it_resolves_to(native, config):
    """Artifact ids hold the resolved precision: on a bf16 machine the shipped `auto` configs
    reuse what the same config written with bfloat16 built, and elsewhere what float32 built."""
    auto = load_config(CONFIGS / config)
    concrete = "bfloat16" if native else "float32"
    written = load_config(
        CONFIGS / config,
        {"policy.dtype": concrete, "value.score_dtype": concrete, "value.training.bf16": native},
    )
    for stage in ("sample_rollout", "value", "eval-iro"):
        assert config_slice(auto, stage, 1) == config_slice(written, stage, 1), stage
    assert auto.model_dump() == written.model_dump()


def test_the_score_dtype_follows_the_device_that_scores(monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_native", lambda device: device.startswith("cuda"))
    on_cpu = parse_config({"value": {"score_dtype": "auto"}})
    on_gpu = parse_config({"value": {"score_dtype": "auto", "score_device": "cuda"}})
    assert (on_cpu.value.score_dtype, on_gpu.value.score_dtype) == ("float32", "bfloat16")


def test_a_concrete_precision_is_kept_whatever_the_machine(native):
    cfg = parse_config({"policy": {"dtype": "float16"}, "value": {"score_dtype": "bfloat16"}})
    assert (cfg.policy.dtype, cfg.value.score_dtype) == ("float16", "bfloat16")


def test_this_machine_is_read_from_its_hardware():
    """The real check, unpatched: a CPU-only machine answers from its instruction set."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU machine")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has_bf16 = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    assert precision.bf16_is_native("cpu") is has_bf16
