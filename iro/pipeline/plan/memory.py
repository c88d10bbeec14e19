"""GPU memory each stage wants, part by part: weights, KV cache, optimizer states,
activations."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from iro.core.config import RewardComponent, RunConfig
from iro.pipeline.plan.models import DTYPE_BYTES, Model, gpu_rewards, with_role
from iro.pipeline.plan.shapes import Shape
from iro.pipeline.plan.workload import prompt_tokens

# Bytes per parameter while training in float32 with AdamW: weights 4 + gradients 4 + the two
# moment estimates 8. bf16 autocast changes the matmuls, not these buffers.
TRAIN_BYTES_PER_PARAM = {"weights": 4, "gradients": 4, "AdamW states": 8}
# Activations kept for the backward pass, per token, layer and hidden unit, in bytes: 34 for a
# transformer layer in 16-bit (Korthikanti et al. 2022, without the attention-score term, which
# fused attention does not store); with gradient checkpointing each layer keeps only its float32
# input (4) and one layer's 34 are live while it is recomputed.
ACTIVATION_BYTES = 34
CHECKPOINTED_BYTES = 4


@dataclass(frozen=True)
class Stage:
    """One stage's GPU memory, part by part (None: a part of unknown size)."""

    name: str
    parts: tuple[tuple[str, int | None], ...]

    @property
    def total(self) -> int | None:
        sizes = [size for _, size in self.parts]
        return None if None in sizes else sum(sizes)


def _scaled(model: Model, bytes_per_param: int) -> int | None:
    return None if model.params is None else model.params * bytes_per_param


def _component_setting(component: RewardComponent, key: str) -> int:
    """A reward component's option, or its class's default (reward/__init__.py REWARD_TYPES)."""
    from iro.reward import REWARD_TYPES

    if key in component.options:
        return int(component.options[key])
    return int(inspect.signature(REWARD_TYPES[component.type]).parameters[key].default)


def generation_stage(cfg: RunConfig, models: tuple[Model, ...]) -> Stage:
    """The policy in vLLM with the KV cache of one engine call, beside the value models (and the
    reward, as a prior) that guide the largest search: K value models at evaluation."""
    policy = next(iter(with_role(models, "policy")), None)
    value = with_role(models, "value")[0]
    budget = max(cfg.search.budget_u, cfg.rollout.samples)
    per_call = min(
        cfg.policy.prompts_per_call or cfg.data.prompts_per_iteration,
        cfg.data.prompts_per_iteration,
    )
    tokens = per_call * (prompt_tokens(cfg) + budget * cfg.sampling.max_new_tokens)
    kv = None
    if policy is not None and policy.shape is not None:
        kv = tokens * policy.shape.kv_bytes_per_token(DTYPE_BYTES[policy.dtype])
    guides = cfg.iterations if cfg.eval.enabled else cfg.iterations - 1
    parts: list[tuple[str, int | None]] = []
    if policy is not None:
        parts.append((f"policy weights ({policy.dtype})", policy.weight_bytes))
        parts.append(
            (
                f"KV cache: {per_call} prompts x ({prompt_tokens(cfg)} + {budget} x "
                f"{cfg.sampling.max_new_tokens}) tokens",
                kv,
            )
        )
    value_bytes = None if value.weight_bytes is None else guides * value.weight_bytes
    parts.append((f"{guides} value models guiding ({value.dtype})", value_bytes))
    if value.matmul_dtype != value.dtype and value.params is not None:
        # autocast keeps a cast copy of the (trainable) weights of the member scoring now
        copy = value.params * DTYPE_BYTES[value.matmul_dtype]
        parts.append((f"{value.matmul_dtype} copy of one, while it scores (autocast)", copy))
    if cfg.value.prior == "reward":
        parts += [
            (f"reward {m.reference} as prior", m.weight_bytes) for m in with_role(models, "reward")
        ]
    return Stage("generation (search)", tuple(parts))


def _activations(cfg: RunConfig, shape: Shape | None, layers: int) -> tuple[str, int | None]:
    training = cfg.value.training
    checkpointing = bool((training.model_extra or {}).get("gradient_checkpointing", False))
    row = min(prompt_tokens(cfg) + cfg.sampling.max_new_tokens, cfg.value.max_length)
    tokens = training.per_device_train_batch_size * row
    label = f"activations: {training.per_device_train_batch_size} x {row} tokens"
    if shape is None:
        return label, None
    if checkpointing:
        per_token = shape.hidden * (CHECKPOINTED_BYTES * layers + ACTIVATION_BYTES)
        return label + ", checkpointed", tokens * per_token
    return label, tokens * shape.hidden * ACTIVATION_BYTES * layers


def training_stage(cfg: RunConfig, models: tuple[Model, ...]) -> Stage:
    """The value model under TRL's trainer: float32 weights, gradients, AdamW states and the
    activations of one per-device batch."""
    value = with_role(models, "value")[0]
    layers = cfg.value.num_layers or (value.shape.layers if value.shape else 0)
    parts = [(f"{name} (fp32)", _scaled(value, per)) for name, per in TRAIN_BYTES_PER_PARAM.items()]
    parts.append(_activations(cfg, value.shape, layers))
    return Stage("value training", tuple(parts))


def scoring_stage(cfg: RunConfig, models: tuple[Model, ...]) -> Stage:
    """Each GPU reward model with one batch's largest layer working set, tokens x (4h + 2i) in
    float32."""
    parts: list[tuple[str, int | None]] = []
    for model, component in zip(with_role(models, "reward"), gpu_rewards(cfg), strict=True):
        parts.append((f"reward weights {model.reference}", model.weight_bytes))
        batch = _component_setting(component, "batch_size")
        row = min(
            prompt_tokens(cfg) + cfg.sampling.max_new_tokens,
            _component_setting(component, "max_length"),
        )
        shape = model.shape
        act = (
            None if shape is None else batch * row * (4 * shape.hidden + 2 * shape.intermediate) * 4
        )
        parts.append((f"forward working set: {batch} x {row} tokens", act))
    return Stage("reward scoring", tuple(parts))
