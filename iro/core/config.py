"""The one typed schema for a run config.

Every section forbids unknown keys, so a typo is an error that names the key before any work
starts. Each stage hashes only the settings it reads (see `iro.pipeline.identity`), so changing,
say, the evaluation settings does not invalidate finished rollouts.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iro.core.methods import METHODS, MethodName

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# A run's name becomes a directory (runs/<name>/) and part of Prefect names: no separators, no
# dots, nothing that could leave the store (`../x`, `/etc`).
RUN_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
# `*_env` settings name the variable that holds a key, never the key: a key written there by
# mistake is refused (below), and a refused value is never echoed (see SECRET_HINTS)
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# how API keys start (OpenAI, Anthropic, Hugging Face, GitHub, Groq, xAI, Google); a variable's
# name starting so would be a strange choice
KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "github_pat_", "gsk_", "xai-", "AIza")
SECRET_HINTS = ("key", "secret", "password", "token_env")


def _a_name_not_a_key(value: str | None) -> str | None:
    """For `*_api_key_env`: refuse a value shaped like a key rather than a variable's name."""
    if value is not None and (
        value.startswith(KEY_PREFIXES) or (len(value) >= 32 and "_" not in value)
    ):
        raise ValueError("this looks like an API key itself")
    return value


EnvVarName = Annotated[str, Field(pattern=ENV_VAR_PATTERN), AfterValidator(_a_name_not_a_key)]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the offending key."""


def check_run_name(name: str) -> str:
    """`name` if it is a valid run name (lowercase letters, digits, dashes), else ConfigError."""
    if not isinstance(name, str) or not re.fullmatch(RUN_NAME_PATTERN, name):
        raise ConfigError(
            f"run name {name!r} is not valid: use lowercase letters, digits and dashes, starting "
            "with a letter or digit (a run name becomes a directory of the store)"
        )
    return name


def _accepts(annotation: Any, kind: type) -> bool:
    """Whether a field's type admits `kind` (int, float or bool), through unions and Annotated."""
    if annotation is kind:
        return True
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        return any(_accepts(arg, kind) for arg in get_args(annotation))
    return False


class Section(BaseModel):
    # NaN or infinity in a setting (`beta: .nan`) would poison every number computed from it
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _flags_and_numbers_do_not_mix(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic would read `iterations: true` as 1 and `trust_remote_code: "yes"` as true:
        a flag must be written true/false, a number as a number."""
        annotation = cls.model_fields[info.field_name].annotation
        is_flag = _accepts(annotation, bool)
        if (
            isinstance(value, bool)
            and not is_flag
            and (_accepts(annotation, int) or _accepts(annotation, float))
        ):
            raise ValueError(f"expected a number, got the flag {str(value).lower()}")
        if is_flag and annotation is bool and not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value


class EndpointConfig(Section):
    """An OpenAI-compatible completions endpoint serving the policy (policy.engine: openai)."""

    base_url: str = Field(..., description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., description="the model name the endpoint serves")
    api_key_env: EnvVarName | None = Field(None, description="env var holding the API key, if any")
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
    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM on GPUs: split the policy across this many GPUs of one machine"
    )
    compile: bool = Field(
        False,
        description="vLLM compiles the policy (torch.compile; on GPUs also CUDA graphs): faster "
        "decoding after a slower start. On the 2-core CPU: 50-70 s more to start an engine, ~8% "
        "faster search (benchmarks/decode_speed.py). Compiled kernels round differently, so the "
        "samples differ from eager mode's",
    )
    prompts_per_call: int | None = Field(
        32,
        ge=1,
        description="a search feeds the engine this many prompts at a time (null: all), so that "
        "their prefixes stay cached from chunk to chunk; on vLLM and endpoints samples do not "
        "depend on it (the transformers engine seeds each batch once, so there they do). 1 GiB "
        "of KV cache holds ~23k tokens of the embedded model: 32 prompts of ~350 tokens, beams",
    )

    @model_validator(mode="after")
    def _endpoint_matches_engine(self) -> PolicyConfig:
        if (self.engine == "openai") != (self.endpoint is not None):
            raise ValueError("policy.endpoint is required with engine: openai, and only then")
        if self.compile and self.engine in ("hf", "openai"):
            raise ValueError(f"policy.compile compiles vLLM's model; engine {self.engine} has none")
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
    batch_size: int = Field(
        64,
        ge=1,
        description="rows the reward reads per call when a table is scored; Ray shards of the "
        "score stage break on its multiples",
    )


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
        "iro", description="the method `iro decode` runs (iro/core/methods.py)"
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

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="names of the trunk's linear layers that get adapters",
    )


class ValueModelConfig(Section):
    backbone: str = Field(EMBEDDED_MODEL, description="causal LM whose trunk reads the text")
    num_layers: int | None = Field(4, ge=1, description="keep only the first N layers; null = all")
    beta: float | list[Annotated[float, Field(gt=0)]] = Field(
        1.0, description="V_i enters the search as V_i / beta_i; a list gives beta_i per iteration"
    )
    max_length: int = Field(512, ge=16)
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
    score_batch_size: int = Field(16, ge=1)
    score_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16: score candidates under bf16 autocast, the precision that "
        "training.bf16 trains in; 1.6x faster value scoring on AVX512-BF16 CPUs and on GPUs",
    )
    score_device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="where the value models score a chunk-level search's candidates: cpu, cuda "
        "or cuda:N (beside vLLM's share of the GPU, policy.gpu_memory_utilization). Token-level "
        "VAS scores where its transformers policy runs, on the CPU",
    )

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


class IVLConfig(Section):
    """Inverse Value Learning: a small causal LM whose output is added to the frozen base's
    logits, log pi(a|s) = log softmax(base(s) + delta(s))[a], learned from demonstrations."""

    backbone: str = Field(EMBEDDED_MODEL, description="the residual network's initial weights")
    num_layers: int | None = Field(4, ge=1, description="keep only the first N layers")
    connection: Literal["logits", "log_probs"] = Field(
        "logits",
        description="logits: delta is added to the base's logits; log_probs: delta is a "
        "normalised log-distribution added to the base's log-probabilities",
    )
    norm_penalty: float = Field(
        0.01, ge=0, description="weight of mean(delta^2): keeps the residual small, for transfer"
    )
    demonstrations: int = Field(512, ge=1, description="training-split prompts with a response")
    response_field: str | None = Field(
        None, description="the dataset's demonstration column; null: data.reference_field"
    )
    train_base: str | None = Field(
        None,
        description="the frozen base the residual is trained against; null: policy.model. "
        "Decoding always adds it to policy.model (transfer when the two differ)",
    )
    max_length: int = Field(512, ge=16)
    training: ValueTrainingConfig = Field(
        default_factory=lambda: ValueTrainingConfig(learning_rate=5e-5, num_train_epochs=1)
    )


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
        if "ivl" in self.baselines:
            raise ValueError("ivl needs its residual: `iro ivl` trains and evaluates it")
        return self


class StoreConfig(Section):
    root: str = Field(
        ".iro/store",
        description="a local directory or an fsspec URL (s3://bucket/prefix): with a URL, "
        "artifacts are built in `cache` and published to the URL, and found there by any machine",
    )
    cache: str = Field(
        ".iro/store-cache", description="with a URL root: the local working copy of its artifacts"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for a URL root (e.g. {endpoint_url: ...}); "
        "credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never from here",
    )


class JudgeConfig(Section):
    """An OpenAI-compatible judge; its key comes from the environment or a Prefect Secret."""

    model: str = "gpt-4o-mini"
    base_url: str | None = Field(None, description="null: the OpenAI API; else any compatible URL")
    api_key_env: EnvVarName = "OPENAI_API_KEY"
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


class RayConfig(Section):
    """Shard generation across Ray workers, each with its own engine; results do not change."""

    workers: int = Field(1, ge=1, description="1: generate in this process; N: N Ray actors")
    address: str | None = Field(
        None, description="an existing cluster (ray://host:10001 or auto); null: start a local one"
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="1 on GPU machines: an engine per GPU")


class RunConfig(Section):
    run_name: str = Field("default", pattern=RUN_NAME_PATTERN)
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
    ivl: IVLConfig = Field(default_factory=IVLConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _a_beta_per_iteration(self) -> RunConfig:
        if isinstance(self.value.beta, list) and len(self.value.beta) < self.iterations:
            raise ValueError(
                f"value.beta lists {len(self.value.beta)} betas for {self.iterations} iterations"
            )
        return self


def _section_at(loc: tuple) -> type[BaseModel] | None:
    """The schema section that holds the key at `loc` (list indexes skipped), if any."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        candidates += [a for c in list(candidates) for a in get_args(c)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _suggestion(loc: tuple) -> str:
    """'; did you mean beams? (known: beams, children, ...)' for a misspelt key."""
    import difflib

    section = _section_at(loc)
    if section is None:
        return ""
    known = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ";"
    return f"{hint} (known here: {', '.join(known)})"


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        leaf = str(item["loc"][-1]) if item["loc"] else ""
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggestion(item['loc'])}")
        elif any(hint in leaf for hint in SECRET_HINTS):
            # never echo what was written where a key's name goes: it may be the key itself
            lines.append(
                f"  {key}: {message} (value not shown); give the name of the environment "
                "variable (or Prefect Secret) that holds the key, not the key itself"
            )
        elif item["type"] == "string_pattern_mismatch" and key == "run_name":
            lines.append(
                f"  {key}: {item.get('input')!r} is not a valid run name: use lowercase letters, "
                "digits and dashes (it names a directory of the store)"
            )
        else:
            lines.append(f"  {key}: {message} (got {item.get('input')!r})")
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


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key written twice in one mapping is an error (PyYAML keeps the
    last silently, so a second `search:` block would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _DuplicateKeyError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} appears a second time in "
                    f"its mapping (first on line {seen[key]}); keep one of them"
                )
            if isinstance(key, str | int | float | bool):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line L, column C: what is wrong', from a PyYAML error."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML, naming the source and the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only
    except _DuplicateKeyError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{source} is not valid YAML: {_yaml_problem(err)}; fix the syntax there (check the "
            "indentation, and quote values that contain ': ' or start with a special character)"
        ) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config; `overrides` maps dotted keys (``search.beams``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    data = read_yaml(text, f"config {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} must be a mapping at the top level (key: value lines), "
            f"got {type(data).__name__}"
        )
    for key, value in (overrides or {}).items():
        set_dotted_key(data, key, value)
    return parse_config(data, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (so 3 is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    return key.strip(), read_yaml(raw, f"override {text!r}: the value")
