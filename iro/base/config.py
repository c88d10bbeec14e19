"""The one typed schema for a run config.

Every section forbids unknown keys, so a typo is an error that names the key before any work
starts. Each stage hashes only the settings it reads (see `iro.pipeline.identity`), so changing,
say, the evaluation settings does not invalidate finished rollouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from iro.base.methods import METHODS, MethodName

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointConfig(Section):
    """An OpenAI-compatible completions endpoint serving the policy (policy.engine: openai)."""

    base_url: str = Field(..., description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., description="the model name the endpoint serves")
    api_key_env: str | None = Field(None, description="env var holding the API key, if any")
    prompt_as_token_ids: bool = Field(True, description="vLLM servers: exact prefixes; false: text")
    supports_top_k: bool = Field(True, description="send top_k (vLLM servers accept it)")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(8, ge=1)


class PolicyConfig(Section):
    """The frozen base policy pi_base."""

    model: str = Field(
        EMBEDDED_MODEL,
        description="embedded:NAME, a local checkpoint dir or a hub id (with engine openai: the "
        "served model's tokenizer)",
    )
    engine: Literal["auto", "vllm", "hf", "openai"] = "auto"
    endpoint: EndpointConfig | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_model_len: int = Field(1024, ge=64)
    trust_remote_code: bool = False
    # vLLM memory knobs: the defaults fit this project's 2-core, 24 GiB CPU machines.
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    cpu_kv_cache_gib: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _endpoint_matches_engine(self) -> PolicyConfig:
        if (self.engine == "openai") != (self.endpoint is not None):
            raise ValueError("policy.endpoint is required with engine: openai, and only then")
        return self


class DataConfig(Section):
    """Where prompts come from and how they are shown to the policy."""

    dataset: str = Field("data/docstrings.jsonl", description="local JSONL/Parquet/CSV or hub id")
    train_split: str = "train"
    eval_split: str = "test"
    split_field: str | None = Field(
        "split", description="column holding the split name in a single-file dataset"
    )
    prompt_field: str = "document"
    reference_field: str | None = "summary"
    id_field: str | None = "id"
    prompt_template: str = (
        "Summarize the following documentation in one short sentence.\n\n{prompt}"
    )
    use_chat_template: bool = True
    prompts_per_iteration: int = Field(32, ge=1)
    eval_prompts: int = Field(24, ge=1)


class RewardComponent(Section):
    type: Literal[
        "embedding_similarity",
        "length_penalty",
        "hf_classifier",
        "tldr_reward_model",
        "sentiment",
        "llm_judge",
    ]
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)


class RewardFunctionConfig(Section):
    """The reward: a weighted sum of components (each component's score is kept in the tables)."""

    components: list[RewardComponent] = Field(
        default_factory=lambda: [
            RewardComponent(type="embedding_similarity"),
            RewardComponent(type="length_penalty", weight=1.0, options={"target_words": 12}),
        ],
        min_length=1,
    )
    batch_size: int = Field(64, ge=1)


class SamplingConfig(Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(50, ge=-1)
    max_new_tokens: int = Field(48, ge=1)
    stop: list[str] | None = Field(None, description="end a response at any of these strings")


class ImplicitRewardConfig(Section):
    """CBS's implicit reward log pi_tuned - log pi_untuned, added to the search score / beta."""

    tuned: str
    untuned: str
    beta: float = Field(1.0, gt=0)


class SearchConfig(Section):
    """Chunk-level beam search: w beams, k continuations of l tokens each (l=None: to the end)."""

    beams: int = Field(2, ge=1, description="w")
    children: int = Field(2, ge=1, description="k")
    chunk_tokens: int | None = Field(8, ge=1, description="l; null means whole responses")
    selection: Literal["diversity_first", "top_w"] = "diversity_first"
    max_candidates: int = Field(256, ge=1, description="upper bound on w*k")
    implicit_reward: ImplicitRewardConfig | None = None

    @model_validator(mode="after")
    def _check_budget(self) -> SearchConfig:
        if self.beams * self.children > self.max_candidates:
            raise ValueError(
                f"beams*children = {self.beams * self.children} exceeds max_candidates = "
                f"{self.max_candidates}"
            )
        return self

    @property
    def budget_u(self) -> int:
        """U = w*k: samples per prompt of one search, the compute measure of docs/method.md."""
        return self.beams * self.children


class DecodeConfig(Section):
    """How `iro decode` (and evaluation of a mode) turns a prompt into one response."""

    mode: MethodName = Field(
        "iro", description="the method `iro decode` runs (iro/base/methods.py)"
    )
    final_pick: Literal["reward", "value"] = Field(
        "reward", description="iro: best of the final candidates by reward, or top value"
    )
    token_top_k: int = Field(10, ge=1, description="vas/args: candidates per token")
    guidance_beta: float = Field(1.0, ge=0, description="vas: logit shift beta * (V - mean V)")
    args_weight: float = Field(1.0, ge=0, description="args: logit + w * reward(prefix + token)")
    greedy: bool = Field(False, description="vas/args: argmax instead of sampling")


class RolloutConfig(Section):
    """Iteration 1 samples plainly from pi_base; later iterations run the guided search."""

    samples: int = Field(4, ge=1, description="N plain samples per prompt in iteration 1")


class ReweightConfig(Section):
    scheme: Literal["argmax", "softmax", "weighted"] = "argmax"
    beta: float = Field(1.0, gt=0, description="temperature of exp(r / beta)")
    resample_size: int = Field(1, ge=1, description="draws per prompt for softmax resampling")


class ValueTrainingConfig(BaseModel):
    """Passed as is to TRL's RewardConfig (transformers' TrainingArguments): the names are theirs.

    Keys beyond the ones below (weight_decay, warmup_ratio, bf16, gradient_checkpointing, ...)
    are passed through too; a name TrainingArguments does not know stops the value stage.
    Paper: AdamW lr 3e-6, eps 1e-5, cosine, no warm-up, 10 epochs, effective batch 256.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    learning_rate: float = Field(1e-4, gt=0)
    adam_epsilon: float = Field(1e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = Field(0, ge=0)
    num_train_epochs: float = Field(2.0, gt=0)
    per_device_train_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)


class ValueModelConfig(Section):
    backbone: str = Field(EMBEDDED_MODEL, description="causal LM whose trunk reads the text")
    num_layers: int | None = Field(4, ge=1, description="keep only the first N layers; null = all")
    beta: float | list[Annotated[float, Field(gt=0)]] = Field(
        1.0, description="V_i enters the search as V_i / beta_i; a list gives beta_i per iteration"
    )
    max_length: int = Field(512, ge=16)
    target: Literal["reward", "advantage"] = Field(
        "advantage",
        description="regress to the reward, or to the reward minus its prompt's mean over all "
        "scored candidates (the search only compares candidates of one prompt)",
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
    score_batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _positive_betas(self) -> ValueModelConfig:
        betas = self.beta if isinstance(self.beta, list) else [self.beta]
        if not betas or min(betas) <= 0:
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


class EvalConfig(Section):
    enabled: bool = True
    baselines: list[MethodName] = Field(
        default_factory=lambda: ["base", "bon"],
        description="methods that need no value model: base (one sample), bon (best of U = w*k), "
        "args (ARGS with the run's reward)",
    )

    @model_validator(mode="after")
    def _baselines_need_no_values(self) -> EvalConfig:
        guided = [m for m in self.baselines if METHODS[m].uses_values]
        if guided:
            raise ValueError(f"{guided} need value models: they are evaluated per iteration")
        return self


class StoreConfig(Section):
    root: str = ".iro/store"


class JudgeConfig(Section):
    """An OpenAI-compatible judge; its key comes from the environment or a Prefect Secret."""

    model: str = "gpt-4o-mini"
    base_url: str | None = Field(None, description="null: the OpenAI API; else any compatible URL")
    api_key_env: str = "OPENAI_API_KEY"
    api_key_secret: str | None = Field(None, description="Prefect Secret block holding the key")
    max_tokens: int = Field(256, ge=1)
    max_retries: int = Field(3, ge=0)
    concurrency: int = Field(4, ge=1)
    constrain_format: bool = Field(
        False, description="vLLM servers: force the verdict format (structured outputs)"
    )


class ReportConfig(Section):
    """Win-rate reports of a run's evaluation outputs against one baseline (`iro report`)."""

    baseline: str = Field("reference", description="reference, or a method: base, bon-4, iro-iter1")
    methods: list[str] | None = Field(None, description="null: every evaluated method")
    reward_winrate: bool = True
    pairwise_judge: Literal["summary", "dialogue"] | None = Field(None, description="null: off")
    alpaca_eval: bool = False
    max_prompts: int | None = Field(None, ge=1, description="judge only the first N (cost cap)")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


class RunConfig(Section):
    run_name: str = Field("default", pattern=r"^[a-z0-9][a-z0-9-]*$")
    seed: int = 0
    iterations: Annotated[int, Field(ge=1)] = 2
    cache_dir: str | None = Field(None, description="converted models; default ~/.cache/iro")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    reward: RewardFunctionConfig = Field(default_factory=RewardFunctionConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    reweight: ReweightConfig = Field(default_factory=ReweightConfig)
    value: ValueModelConfig = Field(default_factory=ValueModelConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _a_beta_per_iteration(self) -> RunConfig:
        if isinstance(self.value.beta, list) and len(self.value.beta) < self.iterations:
            raise ValueError(
                f"value.beta lists {len(self.value.beta)} betas for {self.iterations} iterations"
            )
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def set_dotted_key(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    *parents, leaf = dotted_key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted_key}: {part} is not a section")
    node[leaf] = value


def parse_config(data: dict[str, Any], source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config; `overrides` maps dotted keys (``search.beams``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    for key, value in (overrides or {}).items():
        set_dotted_key(data, key, value)
    return parse_config(data, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (so 3 is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    return key.strip(), yaml.safe_load(raw)
