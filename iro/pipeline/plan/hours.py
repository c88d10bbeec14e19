"""Hours of GPU time per pass: FLOPs over the GPU's peak times the fraction typically
achieved."""

from __future__ import annotations

from iro.core.config import RunConfig
from iro.pipeline.plan.gpus import Gpu
from iro.pipeline.plan.models import Model, with_role
from iro.pipeline.plan.workload import Work

# Achieved fraction of the GPU's peak, per kind of work. Decoding reads every weight and the KV
# cache for each new token, so it is memory-bound even with vLLM's continuous batching; prompt
# prefill and whole-text forward passes are large matmuls; Trainer steps pay the backward pass,
# optimizer and padding.
DECODE_FRACTION = 0.10
PREFILL_FRACTION = 0.45
FORWARD_FRACTION = 0.40
TRAIN_FRACTION = 0.30


def _seconds(flops: float, gpu: Gpu, dtype: str, fraction: float) -> float:
    return flops / (gpu.peak_flops(dtype) * fraction)


def work_hours(
    cfg: RunConfig, models: tuple[Model, ...], work: Work, gpu: Gpu
) -> dict[str, float | None]:
    """Hours of each stage of one pass: FLOPs / (peak x achieved fraction); None where a model's
    size is unknown."""
    policy = next(iter(with_role(models, "policy")), None)
    value = with_role(models, "value")[0]
    hours: dict[str, float | None] = {
        "generate": 0.0,
        "value scoring": 0.0,
        "reward": 0.0,
        "training": 0.0,
    }
    if policy is not None:
        hours["generate"] = None
        if policy.params is not None:
            hours["generate"] = (
                _seconds(2 * policy.params * work.prefill, gpu, policy.dtype, PREFILL_FRACTION)
                + _seconds(2 * policy.params * work.generated, gpu, policy.dtype, DECODE_FRACTION)
            ) / 3600
    if work.value_tokens:
        hours["value scoring"] = _forward_hours(value, work.value_tokens, gpu)
    rewards = [_forward_hours(m, work.reward_tokens, gpu) for m in with_role(models, "reward")]
    hours["reward"] = None if None in rewards else sum(rewards)
    if work.trained_tokens:
        hours["training"] = _training_hours(cfg, value, work.trained_tokens, gpu)
    return hours


def _forward_hours(model: Model, tokens: int, gpu: Gpu) -> float | None:
    if model.params is None:
        return None
    return _seconds(2 * model.params * tokens, gpu, model.matmul_dtype, FORWARD_FRACTION) / 3600


def _training_hours(cfg: RunConfig, value: Model, tokens: int, gpu: Gpu) -> float | None:
    """6 x params per trained token (forward 2, backward 4), 8 with gradient checkpointing
    (the forward pass runs twice)."""
    if value.params is None:
        return None
    extra = cfg.value.training.model_extra or {}
    per_token = 8 if extra.get("gradient_checkpointing") else 6
    dtype = "bfloat16" if extra.get("bf16") or extra.get("fp16") else "float32"
    return _seconds(per_token * value.params * tokens, gpu, dtype, TRAIN_FRACTION) / 3600
