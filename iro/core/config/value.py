"""Learning the value functions: reweighting the scored candidates, targets, model and training."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iro.core.config.base import EMBEDDED_MODEL, Section
from iro.core.precision import AUTO, resolve_bf16, resolve_dtype


class ReweightConfig(Section):
    """How each prompt's scored candidates become the next value model's training rows, by the
    weights softmax(r / beta) over the prompt's candidates (they approximate
    pi_base x exp(r / beta))."""

    scheme: Literal["argmax", "softmax", "weighted"] = Field(
        "argmax",
        description="argmax: keep each prompt's best candidate; softmax: draw resample_size of "
        "them with probability softmax(r / beta); weighted: keep them all, with loss weight n x "
        "softmax(r / beta) over the prompt's n candidates",
    )
    beta: float = Field(1.0, gt=0, description="temperature of exp(r / beta)")
    resample_size: int = Field(1, ge=1, description="draws per prompt for softmax resampling")


class ValueTrainingConfig(BaseModel):
    """Passed as is to TRL's RewardConfig (transformers' TrainingArguments): the names are theirs.

    Keys beyond the ones below (weight_decay, warmup_ratio, bf16, gradient_checkpointing, ...)
    are passed through too; `bf16: auto` trains in bf16 where the training device computes it
    natively. A name TrainingArguments does not know stops the run before its first stage.
    Paper: AdamW lr 3e-6, eps 1e-5, cosine, no warm-up, 10 epochs, effective batch 256.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_bf16(cls, data: Any) -> Any:
        """`bf16: auto`: train in bf16 where the training device computes it natively."""
        if isinstance(data, dict) and data.get("bf16") == AUTO:
            return {**data, "bf16": resolve_bf16()}
        return data

    learning_rate: float = Field(
        1e-4,
        gt=0,
        description="peak learning rate of the AdamW optimizer, reached after warmup_steps and "
        "then changed by lr_scheduler_type",
    )
    adam_epsilon: float = Field(
        1e-5, gt=0, description="AdamW's epsilon, added to its denominator for stability"
    )
    lr_scheduler_type: str = Field(
        "cosine",
        description="how the learning rate changes after warm-up: a transformers scheduler name "
        "(linear, cosine, constant, ...)",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="optimizer steps over which the learning rate rises from 0 to "
        "learning_rate; 0: no warm-up",
    )
    num_train_epochs: float = Field(
        2.0,
        gt=0,
        description="passes over the training rows; a fraction ends part-way through the last",
    )
    per_device_train_batch_size: int = Field(
        16,
        ge=1,
        description="training rows per forward pass on each device (a value model's row is one "
        "candidate, or one prompt with value.pack_candidates; IVL's is one demonstration); "
        "lower it when training runs out of memory",
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="forward passes whose gradients add up to one optimizer step: the effective "
        "batch is per_device_train_batch_size x this (x value.processes for a value model); "
        "raise it to keep the batch when lowering the per-device one",
    )


class TDConfig(Section):
    """VAS's value targets: TD(lambda) returns bootstrapped from a target network.

    With the reward R at the last token and none before, the lambda-return of state t is
    G_t = gamma * ((1 - lambda) * V_target(t+1) + lambda * G_{t+1}), G at the final state = R;
    lambda = 1 is Monte-Carlo (gamma = 1: R everywhere), lambda = 0 one-step bootstrapping.
    """

    trace_decay: float = Field(0.95, ge=0, le=1, description="lambda")
    discount: float = Field(1.0, gt=0, le=1, description="gamma, per token")
    target_updates: int = Field(
        2,
        ge=1,
        description="training runs in this many rounds; each round's targets are computed with "
        "the value model as it stood at the round's start (the target network, hard update)",
    )


class LoraSettings(Section):
    """peft LoRA on the value trunk's linear layers (the head is always trained in full)."""

    r: int = Field(
        16,
        ge=1,
        description="rank of each adapter: more trainable weights per layer, closer to full "
        "training",
    )
    alpha: float = Field(32.0, gt=0, description="scales the adapters' update by alpha / r")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the adapters' input while training; 0: none"
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="names of the trunk's linear layers that get adapters",
    )


class ValueModelConfig(Section):
    """The value models V_1..V_k: a causal LM's trunk with a value head, what they learn
    to predict, how they are trained and how they score the search's candidates."""

    backbone: str = Field(EMBEDDED_MODEL, description="causal LM whose trunk reads the text")
    num_layers: int | None = Field(4, ge=1, description="keep only the first N layers; null = all")
    beta: float | list[Annotated[float, Field(gt=0)]] = Field(
        1.0, description="V_i enters the search as V_i / beta_i; a list gives beta_i per iteration"
    )
    max_length: int = Field(
        512,
        ge=16,
        description="longest text a value model reads, in its tokens: prompt plus response, the "
        "prompt's start cut to fit, in training and in scoring (the implicit reward too); a "
        "response that leaves no room for the prompt is an error",
    )
    target: Literal["reward", "advantage", "td_lambda"] = Field(
        "advantage",
        description="reward: the Monte-Carlo return (the final reward at every state); "
        "advantage: the reward minus its prompt's mean over all scored candidates (the search "
        "only compares candidates of one prompt); td_lambda: VAS's lambda-returns (value.td)",
    )
    td: TDConfig = Field(default_factory=TDConfig)
    head: Literal["scalar", "vocabulary"] = Field(
        "scalar",
        description="scalar: V read at every position; vocabulary: one output per token, so one "
        "forward pass at state s gives V(s + a) for every next token a (fast token-level "
        "guidance: vas reads its top-k from one pass instead of k)",
    )
    prior: Literal["none", "reward"] = Field(
        "none",
        description="reward: V = r(x, y<t) + a learned residual, i.e. the run's reward read on "
        "the partial response plus a network trained on R - r(x, y<t); finished responses are "
        "valued at their reward. The reward on a prefix already ranks prefixes; the network "
        "learns what the rest of the response will add",
    )
    prior_stride: int = Field(
        4, ge=1, description="with a prior: train the residual every N response tokens"
    )
    pack_candidates: bool = Field(
        False,
        description="train on one row per prompt with all its candidates packed after it (the "
        "prompt is read once; a batch is per_device_train_batch_size prompts) instead of one row "
        "per candidate",
    )
    training: ValueTrainingConfig = Field(default_factory=ValueTrainingConfig)
    init_from_previous: bool = Field(True, description="V_k starts from V_{k-1}")
    lora: LoraSettings | None = Field(
        None,
        description="train low-rank adapters on the value trunk instead of all its weights "
        "(peft); they are merged into the saved model, so scoring is unchanged",
    )
    processes: int = Field(
        1,
        ge=1,
        description="train on this many data-parallel processes (torchrun, one per GPU; TRL's "
        "trainer through accelerate, DeepSpeed with training.deepspeed); the effective batch is "
        "processes x per_device_train_batch_size x gradient_accumulation_steps",
    )
    score_batch_size: int = Field(
        16,
        ge=1,
        description="texts per value-model forward pass while value models guide a search or "
        "decoding; lower it when generation runs out of memory (it changes no artifact id)",
    )
    score_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="bfloat16: score candidates under bf16 autocast, the precision that "
        "training.bf16 trains in; 1.6x faster value scoring on AVX512-BF16 CPUs and on GPUs; "
        "auto: bfloat16 where score_device computes it natively, else float32",
    )
    score_device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="where the value models score a chunk-level search's candidates: cpu, cuda "
        "or cuda:N (beside vLLM's share of the GPU, policy.gpu_memory_utilization). Token-level "
        "VAS scores where its transformers policy runs, on the CPU",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_score_dtype(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("score_dtype") == AUTO:
            device = data.get("score_device")  # a malformed one is reported by its own check
            where = device if isinstance(device, str) and device.startswith("cuda") else "cpu"
            return {**data, "score_dtype": resolve_dtype(AUTO, where)}
        return data

    @model_validator(mode="after")
    def _td_targets_are_whole_values(self) -> ValueModelConfig:
        if self.target == "td_lambda" and self.prior != "none":
            raise ValueError(
                "value.target td_lambda bootstraps whole values from a target network; it does "
                "not train a residual on a prior: set value.prior: none (or target: reward)"
            )
        return self

    @model_validator(mode="after")
    def _positive_betas(self) -> ValueModelConfig:
        betas = self.beta if isinstance(self.beta, list) else [self.beta]
        if not betas or not all(b > 0 for b in betas):  # NaN is not > 0 either
            raise ValueError(
                f"value.beta must be > 0 (or a non-empty list of them), got {self.beta}"
            )
        return self

    def betas(self, count: int) -> list[float]:
        """beta_1..beta_count for V_1..V_count: one beta for all, or the list's first `count`."""
        if not isinstance(self.beta, list):
            return [self.beta] * count
        if count > len(self.beta):
            raise ValueError(
                f"value.beta lists {len(self.beta)} betas but {count} value models guide"
            )
        return self.beta[:count]
