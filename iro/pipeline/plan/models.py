"""The models a run loads on the GPU, their sizes and the dtypes they are stored and run in."""

from __future__ import annotations

from dataclasses import dataclass

from iro.core.config import RewardComponent, RunConfig
from iro.pipeline.plan.shapes import Shape, find_shape
from iro.reward.base import checked_dtype

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Value models and reward models are loaded in float32 (valuefn/model.py, reward/*.py), so their
# weights take 4 bytes. Their forward passes run under autocast to `value.score_dtype`
# (valuefn/scoring.py) and to a reward component's `dtype` option (reward/base.py).
SCORER_DTYPE = "float32"
# Rewards whose model runs on the GPU; the rest (length, VADER, a remote judge) cost no GPU time.
GPU_REWARDS = ("hf_classifier", "tldr_reward_model")


@dataclass(frozen=True)
class Model:
    """A model the run loads, its size (None: unknown) and where the size came from."""

    role: str
    reference: str
    dtype: str  # of the weights
    shape: Shape | None
    params: int | None
    source: str
    compute_dtype: str = ""  # of the forward's matmuls (autocast); empty: the weights' dtype

    @property
    def matmul_dtype(self) -> str:
        return self.compute_dtype or self.dtype

    @property
    def weight_bytes(self) -> int | None:
        return None if self.params is None else self.params * DTYPE_BYTES[self.dtype]


def _model(
    role: str,
    reference: str,
    dtype: str,
    cfg: RunConfig,
    lm_head: bool,
    layers: int | None,
    compute_dtype: str = "",
) -> Model:
    shape, source = find_shape(reference, cfg.cache_dir)
    params = None if shape is None else shape.params(lm_head=lm_head, layers=layers)
    return Model(role, reference, dtype, shape, params, source, compute_dtype)


def gpu_rewards(cfg: RunConfig) -> list[RewardComponent]:
    """The reward components whose model runs on the GPU."""
    return [c for c in cfg.reward.components if c.type in GPU_REWARDS and "model" in c.options]


def run_models(cfg: RunConfig) -> tuple[Model, ...]:
    """Every model the run loads on the GPU: the policy (unless an endpoint serves it), the value
    backbone (a trunk without LM head) and the rewards that run a model."""
    models = []
    if cfg.policy.engine != "openai":
        models.append(_model("policy", cfg.policy.model, cfg.policy.dtype, cfg, True, None))
    value = cfg.value
    models.append(
        _model(
            "value", value.backbone, SCORER_DTYPE, cfg, False, value.num_layers, value.score_dtype
        )
    )
    for component in gpu_rewards(cfg):
        reference = str(component.options["model"])
        dtype = checked_dtype(component.type, component.options.get("dtype", SCORER_DTYPE))
        models.append(_model("reward", reference, SCORER_DTYPE, cfg, False, None, dtype))
    return tuple(models)


def with_role(models: tuple[Model, ...], role: str) -> list[Model]:
    """The run's models that play `role` (policy, value or reward)."""
    return [m for m in models if m.role == role]
