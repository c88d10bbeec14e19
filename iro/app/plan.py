"""`iro check CONFIG --plan`: what a run would need on a GPU, worked out without downloading.

A paper-scale run costs GPU hours before its first result; this says beforehand which models it
loads, how much GPU memory each stage wants, how many tokens each iteration generates, scores and
trains on, and about how long that takes on a named GPU. Model shapes come from a local
config.json (a checkpoint directory, the converted embedded model, or the hub cache), else from
`KNOWN_MODELS` below, else the model is reported as of unknown size. The cost model and its
constants are documented in docs/scaling.md.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

from iro.core.config import RewardComponent, RunConfig
from iro.core.models import EMBEDDED_PREFIX, default_cache_dir
from iro.reward.base import checked_dtype

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Value models and reward models are loaded in float32 (valuefn/model.py, reward/*.py), so their
# weights take 4 bytes. Their forward passes run under autocast to `value.score_dtype`
# (valuefn/scoring.py) and to a reward component's `dtype` option (reward/base.py).
SCORER_DTYPE = "float32"
# Bytes per parameter while training in float32 with AdamW: weights 4 + gradients 4 + the two
# moment estimates 8. bf16 autocast changes the matmuls, not these buffers.
TRAIN_BYTES_PER_PARAM = {"weights": 4, "gradients": 4, "AdamW states": 8}
# Activations kept for the backward pass, per token, layer and hidden unit, in bytes: 34 for a
# transformer layer in 16-bit (Korthikanti et al. 2022, without the attention-score term, which
# fused attention does not store); with gradient checkpointing each layer keeps only its float32
# input (4) and one layer's 34 are live while it is recomputed.
ACTIVATION_BYTES = 34
CHECKPOINTED_BYTES = 4
# Achieved fraction of the GPU's peak, per kind of work. Decoding reads every weight and the KV
# cache for each new token, so it is memory-bound even with vLLM's continuous batching; prompt
# prefill and whole-text forward passes are large matmuls; Trainer steps pay the backward pass,
# optimizer and padding.
DECODE_FRACTION = 0.10
PREFILL_FRACTION = 0.45
FORWARD_FRACTION = 0.40
TRAIN_FRACTION = 0.30
# Rewards whose model runs on the GPU; the rest (length, VADER, a remote judge) cost no GPU time.
GPU_REWARDS = ("hf_classifier", "tldr_reward_model")
NOT_FOUND = "no local config.json, not in the hub cache nor in KNOWN_MODELS"


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's dimensions: enough for its parameter count and KV cache."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    gated_mlp: bool  # SwiGLU-style MLP: three matrices instead of two
    tied_embeddings: bool
    head_dim: int | None = None

    @property
    def attention_width(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def params(self, lm_head: bool = True, layers: int | None = None) -> int:
        """Weights of the embedding, `layers` blocks and (when asked, untied) the LM head.
        Norms and biases (<0.1%) are left out."""
        h, d = self.hidden, self.attention_width
        attention = h * d * (2 * self.heads + 2 * self.kv_heads)
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate
        head = self.vocab * h if lm_head and not self.tied_embeddings else 0
        return self.vocab * h + head + (layers or self.layers) * (attention + mlp)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.attention_width * dtype_bytes


# The paper's models (and the embedded default), from their published config.json files, so that
# a plan needs no download. Parameter counts follow from the shapes: Pythia-1B 1.01 B,
# Pythia-6.9B 6.86 B, Llama-3-8B 8.03 B, Llama-3-70B 70.6 B, Mistral-7B 7.24 B.
PYTHIA_1B = Shape(2048, 16, 8, 8, 8192, 50304, gated_mlp=False, tied_embeddings=False)
PYTHIA_6_9B = Shape(4096, 32, 32, 32, 16384, 50432, gated_mlp=False, tied_embeddings=False)
LLAMA_3_8B = Shape(4096, 32, 32, 8, 14336, 128256, gated_mlp=True, tied_embeddings=False)
LLAMA_3_70B = Shape(8192, 80, 64, 8, 28672, 128256, gated_mlp=True, tied_embeddings=False)
MISTRAL_7B = Shape(4096, 32, 32, 8, 14336, 32000, gated_mlp=True, tied_embeddings=False)
SMOLLM2_135M = Shape(576, 30, 9, 3, 1536, 49152, gated_mlp=True, tied_embeddings=True)
KNOWN_MODELS: dict[str, Shape] = {
    "cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr": PYTHIA_1B,
    "cleanrl/EleutherAI_pythia-1b-deduped__reward__tldr": PYTHIA_1B,
    "vwxyzjn/EleutherAI_pythia-1b-deduped__sft__tldr": PYTHIA_1B,
    "vwxyzjn/EleutherAI_pythia-1b-deduped__reward__tldr": PYTHIA_1B,
    "EleutherAI/pythia-1b-deduped": PYTHIA_1B,
    "vwxyzjn/EleutherAI_pythia-6.9b-deduped__sft__tldr": PYTHIA_6_9B,
    "vwxyzjn/EleutherAI_pythia-6.9b-deduped__reward__tldr": PYTHIA_6_9B,
    "meta-llama/Meta-Llama-3-8B-Instruct": LLAMA_3_8B,
    "sfairXC/FsfairX-LLaMA3-RM-v0.1": LLAMA_3_8B,
    "meta-llama/Meta-Llama-3-70B-Instruct": LLAMA_3_70B,
    "SiliangZ/RM_Mistral_sft_init_ultrafeedbck_lr_5e6": MISTRAL_7B,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2_135M,
}
EMBEDDED_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


@dataclass(frozen=True)
class Gpu:
    """Dense peak throughput (no sparsity) in TFLOP/s, and memory in GiB."""

    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float

    def peak_flops(self, dtype: str) -> float:
        return 1e12 * (self.fp32_tflops if dtype == "float32" else self.bf16_tflops)


GPUS = {
    "h100": Gpu("H100 SXM", 989.0, 67.0, 80),
    "h200": Gpu("H200 SXM", 989.0, 67.0, 141),
    "a100": Gpu("A100 SXM 80GB", 312.0, 19.5, 80),
    "l4": Gpu("L4", 121.0, 30.3, 24),
}


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


@dataclass(frozen=True)
class Work:
    """Tokens one search (or plain sampling) pass and its training touch."""

    label: str
    prompts: int
    samples: int  # per prompt: N plain samples, or U = w*k candidates
    value_models: int
    generated: int
    prefill: int
    value_tokens: int
    reward_tokens: int
    trained_tokens: int = 0


@dataclass(frozen=True)
class Stage:
    """One stage's GPU memory, part by part (None: a part of unknown size)."""

    name: str
    parts: tuple[tuple[str, int | None], ...]

    @property
    def total(self) -> int | None:
        sizes = [size for _, size in self.parts]
        return None if None in sizes else sum(sizes)


@dataclass(frozen=True)
class Plan:
    source: str
    cfg: RunConfig
    gpu: Gpu
    prompt_tokens: int
    models: tuple[Model, ...]
    stages: tuple[Stage, ...]
    work: tuple[Work, ...]
    hours: tuple[dict[str, float | None], ...]  # per Work: stage -> hours


def _shape_from_config(config: dict) -> Shape | None:
    """The Shape a transformers config.json describes (a TL;DR reward model's `base_config`
    inside it), or None when it lacks a dimension."""
    config = config.get("base_config", config)

    def first(*keys: str, default: object = None) -> object:
        return next((config[k] for k in keys if config.get(k) is not None), default)

    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer")
    heads = first("num_attention_heads", "n_head")
    vocab = first("vocab_size")
    if not all(isinstance(v, int) for v in (hidden, layers, heads, vocab)):
        return None
    act = str(first("hidden_act", "hidden_activation", "activation_function", default=""))
    return Shape(
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=int(first("num_key_value_heads", default=heads)),
        intermediate=int(first("intermediate_size", "n_inner", default=4 * hidden)),
        vocab=vocab,
        gated_mlp=act in ("silu", "swish") or str(config.get("model_type", "")).startswith("gemma"),
        tied_embeddings=bool(config.get("tie_word_embeddings", True)),
        head_dim=first("head_dim"),
    )


def _hub_cached_config(reference: str) -> Path | None:
    """config.json of a hub id already in the local hub cache (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(reference, "config.json")
    return Path(cached) if isinstance(cached, str) else None


def _local_config(reference: str, cache_dir: str | None) -> Path | None:
    """A config.json on this machine for the reference, if any."""
    if reference.startswith(EMBEDDED_PREFIX):
        name = reference.removeprefix(EMBEDDED_PREFIX)
        path = Path(cache_dir or default_cache_dir()) / "models" / name / "config.json"
        return path if path.is_file() else None
    path = Path(reference).expanduser() / "config.json"
    if path.is_file():
        return path
    if reference.count("/") == 1 and not reference.startswith((".", "/", "~")):
        return _hub_cached_config(reference)
    return None


def find_shape(reference: str, cache_dir: str | None = None) -> tuple[Shape | None, str]:
    """(shape, where it came from): a local config.json, the table, or unknown."""
    config = _local_config(reference, cache_dir)
    if config is not None:
        shape = _shape_from_config(json.loads(config.read_text()))
        return shape, str(config) if shape else f"{config} lacks a dimension"
    known = EMBEDDED_HUB_IDS.get(reference.removeprefix(EMBEDDED_PREFIX), reference)
    if known in KNOWN_MODELS:
        return KNOWN_MODELS[known], "table" if known == reference else f"table ({known})"
    return None, NOT_FOUND


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


def _gpu_rewards(cfg: RunConfig) -> list[RewardComponent]:
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
    for component in _gpu_rewards(cfg):
        reference = str(component.options["model"])
        dtype = checked_dtype(component.type, component.options.get("dtype", SCORER_DTYPE))
        models.append(_model("reward", reference, SCORER_DTYPE, cfg, False, None, dtype))
    return tuple(models)


def prompt_tokens(cfg: RunConfig) -> int:
    """The longest prompt a run accepts (longer ones stop it, iro/pipeline/generation.py): an
    upper bound on the prompt length, used for prefill, KV cache and scoring."""
    return cfg.policy.max_model_len - cfg.sampling.max_new_tokens


def _chunk_steps(cfg: RunConfig) -> int:
    chunk = cfg.search.chunk_tokens or cfg.sampling.max_new_tokens
    return math.ceil(cfg.sampling.max_new_tokens / chunk)


def _trained_tokens(cfg: RunConfig, prompts: int, samples: int) -> int:
    """Tokens the value model is trained on: rows kept by the reweighting, times epochs."""
    rows = {"argmax": 1, "softmax": cfg.reweight.resample_size, "weighted": samples}
    per_prompt = rows[cfg.reweight.scheme]
    new, prompt = cfg.sampling.max_new_tokens, prompt_tokens(cfg)
    if cfg.value.pack_candidates:
        tokens = prompt + per_prompt * new
    else:
        tokens = per_prompt * min(prompt + new, cfg.value.max_length)
    return math.ceil(prompts * tokens * cfg.value.training.num_train_epochs)


def search_work(
    cfg: RunConfig, label: str, prompts: int, samples: int, value_models: int, train: bool
) -> Work:
    """Token counts of one pass over `prompts`, each with `samples` candidates of up to
    max_new_tokens (early ends are not predicted: the counts are upper bounds).

    The prompt is prefilled once per prompt (prefix caching shares it among candidates and
    chunks); each value model reads it once and then extends every candidate incrementally; the
    reward reads each final candidate whole, and every candidate at every chunk when it is the
    value's prior (value.prior: reward).
    """
    new, prompt = cfg.sampling.max_new_tokens, prompt_tokens(cfg)
    value_tokens = value_models * prompts * (prompt + samples * new)
    reward_tokens = prompts * samples * (prompt + new)
    if value_models and cfg.value.prior == "reward":
        reward_tokens += prompts * samples * _chunk_steps(cfg) * (prompt + new // 2)
    return Work(
        label=label,
        prompts=prompts,
        samples=samples,
        value_models=value_models,
        generated=prompts * samples * new,
        prefill=prompts * prompt,
        value_tokens=value_tokens,
        reward_tokens=reward_tokens,
        trained_tokens=_trained_tokens(cfg, prompts, samples) if train else 0,
    )


def run_work(cfg: RunConfig) -> tuple[Work, ...]:
    """Iteration 1 samples plainly; iteration k searches with V_1..V_{k-1}; the evaluation runs
    each baseline and iro-iter1..K on the held-out prompts."""
    prompts, budget = cfg.data.prompts_per_iteration, cfg.search.budget_u
    work = [search_work(cfg, "iteration 1", prompts, cfg.rollout.samples, 0, True)]
    for k in range(2, cfg.iterations + 1):
        work.append(search_work(cfg, f"iteration {k}", prompts, budget, k - 1, True))
    if cfg.eval.enabled:
        held_out = cfg.data.eval_prompts
        samples = {"base": 1, "bon": budget}
        for method in cfg.eval.baselines:
            if method in samples:  # args is token-level: not in this model
                label = f"eval {method}" + (f"-{budget}" if method == "bon" else "")
                work.append(search_work(cfg, label, held_out, samples[method], 0, False))
        for k in range(1, cfg.iterations + 1):
            work.append(search_work(cfg, f"eval iro-iter{k}", held_out, budget, k, False))
    return tuple(work)


def _role(models: tuple[Model, ...], role: str) -> list[Model]:
    return [m for m in models if m.role == role]


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
    policy = next(iter(_role(models, "policy")), None)
    value = _role(models, "value")[0]
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
            (f"reward {m.reference} as prior", m.weight_bytes) for m in _role(models, "reward")
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
    value = _role(models, "value")[0]
    layers = cfg.value.num_layers or (value.shape.layers if value.shape else 0)
    parts = [(f"{name} (fp32)", _scaled(value, per)) for name, per in TRAIN_BYTES_PER_PARAM.items()]
    parts.append(_activations(cfg, value.shape, layers))
    return Stage("value training", tuple(parts))


def scoring_stage(cfg: RunConfig, models: tuple[Model, ...]) -> Stage:
    """Each GPU reward model with one batch's largest layer working set, tokens x (4h + 2i) in
    float32."""
    parts: list[tuple[str, int | None]] = []
    for model, component in zip(_role(models, "reward"), _gpu_rewards(cfg), strict=True):
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


def _seconds(flops: float, gpu: Gpu, dtype: str, fraction: float) -> float:
    return flops / (gpu.peak_flops(dtype) * fraction)


def work_hours(
    cfg: RunConfig, models: tuple[Model, ...], work: Work, gpu: Gpu
) -> dict[str, float | None]:
    """Hours of each stage of one pass: FLOPs / (peak x achieved fraction); None where a model's
    size is unknown."""
    policy = next(iter(_role(models, "policy")), None)
    value = _role(models, "value")[0]
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
    rewards = [_forward_hours(m, work.reward_tokens, gpu) for m in _role(models, "reward")]
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


def build_plan(cfg: RunConfig, source: str, gpu: str = "h100") -> Plan:
    """Everything `iro check --plan` prints, from the config alone."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    device = GPUS[gpu]
    models = run_models(cfg)
    work = run_work(cfg)
    stages = (
        generation_stage(cfg, models),
        training_stage(cfg, models),
        scoring_stage(cfg, models),
    )
    hours = tuple(work_hours(cfg, models, w, device) for w in work)
    return Plan(source, cfg, device, prompt_tokens(cfg), models, stages, work, hours)


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return str(n)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f}"


def _hours(h: float | None) -> str:
    return "?" if h is None else f"{h:.2f}"


def _format_models(plan: Plan) -> list[str]:
    lines = ["Models (nothing downloaded):"]
    for m in plan.models:
        size = (
            f"unknown size ({m.source})"
            if m.params is None
            else f"{_count(m.params)} params, {_gib(m.weight_bytes)} GiB {m.dtype}; from {m.source}"
        )
        if m.matmul_dtype != m.dtype:
            size += f"; runs in {m.matmul_dtype} (autocast)"
        lines += [f"  {m.role:<16} {m.reference}", f"  {'':<16} {size}"]
    return lines


def _verdict(total: int | None, gpu: Gpu) -> str:
    if total is None:
        return "  (unknown sizes left out)"
    return "  fits" if total <= gpu.memory_gib * GIB else f"  EXCEEDS one {gpu.name}"


def _format_stage(stage: Stage, gpu: Gpu, width: int) -> list[str]:
    lines = [f"  {stage.name}:"]
    if not stage.parts:
        return [*lines, "    no model on the GPU"]
    lines += [f"    {name:<{width}} {_gib(size):>7} GiB" for name, size in stage.parts]
    known = sum(size for _, size in stage.parts if size is not None)
    lines.append(f"    {'total':<{width}} {_gib(known):>7} GiB{_verdict(stage.total, gpu)}")
    return lines


def _format_memory(plan: Plan) -> list[str]:
    gpu, policy = plan.gpu, plan.cfg.policy
    width = max(len(name) for stage in plan.stages for name, _ in stage.parts)
    lines = [f"GPU memory per stage ({gpu.name}: {gpu.memory_gib:g} GiB):"]
    for stage in plan.stages:
        lines += _format_stage(stage, gpu, width)
    if policy.engine != "openai":
        pool = policy.gpu_memory_utilization * gpu.memory_gib
        lines.append(
            f"  vLLM reserves policy.gpu_memory_utilization x {gpu.memory_gib:g} = {pool:.1f} GiB "
            "for policy weights + KV cache; a smaller pool than the batch wants queues "
            "sequences (slower, not an error)"
        )
    return lines


def _format_work(plan: Plan) -> list[str]:
    header = f"  {'pass':<18} {'prompts':>7} {'U':>3} {'V':>2} {'generated':>10} {'prefill':>9} {'value tok':>10} {'reward tok':>10} {'trained':>9}"
    lines = [
        f"Tokens (prompts counted at their upper bound of {plan.prompt_tokens} tokens; U: "
        "candidates per prompt, V: value models guiding):",
        header,
    ]
    for w in plan.work:
        lines.append(
            f"  {w.label:<18} {w.prompts:>7} {w.samples:>3} {w.value_models:>2} {_count(w.generated):>10} "
            f"{_count(w.prefill):>9} {_count(w.value_tokens):>10} {_count(w.reward_tokens):>10} "
            f"{_count(w.trained_tokens):>9}"
        )
    return lines


def _format_hours(plan: Plan) -> list[str]:
    stages = list(plan.hours[0])
    lines = [
        f"Estimated hours on one {plan.gpu.name} (cost model: docs/scaling.md; ?: unknown size):",
        f"  {'pass':<18} " + " ".join(f"{s:>13}" for s in stages) + f" {'total':>8}",
    ]
    grand: float | None = 0.0
    for work, hours in zip(plan.work, plan.hours, strict=True):
        values = list(hours.values())
        total = None if None in values else sum(values)
        grand = None if grand is None or total is None else grand + total
        cells = " ".join(f"{_hours(h):>13}" for h in values)
        lines.append(f"  {work.label:<18} {cells} {_hours(total):>8}")
    lines.append(f"  {'all':<18} {'':>{14 * len(stages) - 1}} {_hours(grand):>8}")
    return lines


def format_plan(plan: Plan) -> str:
    cfg = plan.cfg
    head = (
        f"Plan for {plan.source} (run {cfg.run_name}): {cfg.iterations} iterations x "
        f"{cfg.data.prompts_per_iteration} prompts, search w={cfg.search.beams} "
        f"k={cfg.search.children} l={cfg.search.chunk_tokens}, {cfg.sampling.max_new_tokens} new tokens"
    )
    sections = [_format_models(plan), _format_memory(plan), _format_work(plan), _format_hours(plan)]
    return "\n\n".join([head, *("\n".join(s) for s in sections)])
