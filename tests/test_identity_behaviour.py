"""A stage's artifact id changes exactly when a setting changes what the stage builds.

`iro.pipeline.identity` lists the settings each stage's id includes, and `test_identity` checks
the ids against that list. Here the list is checked against the stages themselves: every setting
of the schema (but the few in NOT_RUN_HERE) is changed, one at a time, and the plain-sample
rollout (iteration 1), the reward scoring, the reweighting and the value training are run on a
tiny model and fixed tables, through the functions the pipeline's stages call. For each stage
and setting the output must change exactly when the id does:

- output changed, id not: a rerun would silently reuse an artifact built with the old setting;
- id changed, output not: the setting rebuilds artifacts for nothing. The few settings kept in
  an id on purpose are in ID_ONLY, and identity.py says why.

Which settings change an output is found by running the stage, never read from identity.py, and
each new value is chosen to show wherever a stage reads the key. A stage's inputs are held
fixed, so its parents' ids stay the same and its id changes exactly when its config slice does.
Changes that start Ray actors or torchrun processes run in the slow set.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pandas as pd
import pytest
import torch
from pydantic import BaseModel

from iro.core.config import RunConfig, parse_config, set_dotted_key
from iro.core.data import iteration_slice, load_prompts
from iro.core.store.local import ArtifactStore
from iro.pipeline import sharding
from iro.pipeline.execution import generate, score_rows
from iro.pipeline.identity import config_slice
from iro.pipeline.methods import rollout_settings
from iro.pipeline.value_training import train_value
from iro.valuefn.reweight import reweight
from tests.conftest import WORDS, make_causal_lm, make_tokenizer

# -- the tiny world: two policies, two datasets, fixed candidate tables --

# Whole values that stand for the files the `world` fixture makes.
LM = "<tiny lm>"
OTHER_LM = "<other tiny lm>"
DATASET = "<dataset>"
OTHER_DATASET = "<other dataset>"
SCRATCH = "<scratch directory>"

# A template that differs from the plain prompt, so that data.use_chat_template shows.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %} summary{% endif %}"
)

# The run every change starts from. Where a section has settings that only some value of
# another selects (softmax's resample_size, the reward prior's stride), the base selects them.
BASE: dict[str, Any] = {
    "seed": 3,
    "policy.model": LM,
    "policy.engine": "hf",
    "data.dataset": DATASET,
    "data.prompts_per_iteration": 2,
    "data.eval_prompts": 2,
    "data.prompt_template": "{prompt}",
    "data.use_chat_template": False,
    "reward.components": [
        {"type": "length_penalty", "options": {"target_words": 2, "per_word": 0.1}}
    ],
    "sampling.temperature": 1.0,
    "sampling.top_p": 1.0,
    "sampling.top_k": 0,
    "sampling.max_new_tokens": 4,
    "rollout.samples": 2,
    "reweight.scheme": "softmax",
    "reweight.resample_size": 2,
    "value.backbone": LM,
    "value.num_layers": 1,
    "value.max_length": 64,
    "value.prior": "reward",
    "value.prior_stride": 2,
    "value.training.num_train_epochs": 1,
    "value.training.per_device_train_batch_size": 2,
    "value.training.learning_rate": 1e-2,
}

# The candidates scored, reweighted and trained on: two prompts of three responses each, longer
# together than the 16 tokens of the shortest value.max_length.
PROMPT_TEXTS = {
    "p1": "the function returns a new list of the data in the file and the path of it",
    "p2": "this class is a short object with one method that returns the name of a string",
}
RESPONSES = {
    "p1": ["a new list", "the list of data in the file", "returns"],
    "p2": ["the name of a string", "a short object", "it returns the name as a new string"],
}
CANDIDATES = pd.DataFrame(
    [
        {
            "prompt_id": prompt_id,
            "prompt": text,
            "reference": "a short summary",
            "prompt_text": text,
            "candidate": rank,
            "response": response,
            "num_tokens": len(response.split()),
            "ended": rank != 1,
            "value_score": 0.0,
        }
        for prompt_id, text in PROMPT_TEXTS.items()
        for rank, response in enumerate(RESPONSES[prompt_id])
    ]
)
SCORED = CANDIDATES.assign(reward=[0.9, 0.1, -0.5, 0.3, 0.2, -0.1])
REWEIGHTED = SCORED.assign(
    weight=1.0, prompt_mean_reward=SCORED.groupby("prompt_id")["reward"].transform("mean")
)


def write_dataset(path: Path, shift: int) -> Path:
    """Ten prompts of twelve known words: `split` and `part` split them differently, and every
    configurable field (prompt, reference, id) has a second column to switch to."""
    splits = ["train"] * 4 + ["test"] * 3 + ["extra"] * 3

    def words(row: int, step: int) -> str:
        return " ".join(WORDS[(shift + row * step + j) % len(WORDS)] for j in range(12))

    rows = [
        {
            "id": f"doc{i}",
            "uid": f"u{i}",
            "split": splits[i],
            "part": splits[-1 - i],
            "document": words(i, 7),
            "text": words(i, 5),
            "summary": words(i, 3)[:20],
            "gold": words(i, 2)[:20],
        }
        for i in range(len(splits))
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def make_policy(directory: Path, seed: int, tokenizer) -> str:
    """A tiny LM on which every sampling setting shows in a handful of tokens.

    A random tiny LM's next-token distribution is nearly flat, so reshaping it (temperature,
    top-p) seldom changes a draw: its output layer is scaled up. Every row of that layer also
    gets one large common vector. It adds the same amount to every logit, which the softmax
    cancels (float32 samples are the plain model's), but half precision rounds those large
    logits coarsely, so policy.dtype changes the samples too.
    """
    from transformers import LlamaForCausalLM

    make_causal_lm(directory, seed, tokenizer)
    model = LlamaForCausalLM.from_pretrained(directory)
    common = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.lm_head.weight.mul_(30).add_(256 * common / common.norm())
    model.save_pretrained(directory)
    return str(directory)


@dataclass(frozen=True)
class World:
    files: dict[str, str]  # placeholder -> path

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.files.get(value, value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def config(self, settings: Mapping[str, Any]) -> RunConfig:
        """BASE with `settings` (dotted keys) on top, placeholders replaced by the files."""
        data: dict[str, Any] = {}
        for key, value in {**BASE, **settings}.items():
            set_dotted_key(data, key, self.resolve(value))
        return parse_config(data)


@pytest.fixture(scope="module", autouse=True)
def quick_tiny_runs():
    """Hundreds of tiny runs: on one thread (tiny matrices run faster on one), and with the
    objects alive now frozen, as the trainer collects garbage after every training, which would
    otherwise walk every object of the test session each time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.freeze()
    yield
    gc.unfreeze()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("identity-behaviour")
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return World(
        {
            LM: make_policy(root / "lm", seed=0, tokenizer=tokenizer),
            OTHER_LM: make_policy(root / "other-lm", seed=1, tokenizer=tokenizer),
            DATASET: str(write_dataset(root / "data.jsonl", shift=0)),
            OTHER_DATASET: str(write_dataset(root / "other.jsonl", shift=11)),
            SCRATCH: str(root / "scratch"),
        }
    )


# -- the changes: every setting of the schema, to a value that shows where it is read --


@dataclass(frozen=True)
class Change:
    key: str
    value: Any
    # settings the change is made on top of: ones that make a stage read the key at all (the
    # LoRA keys need value.lora), or defaults under which a stage ignores it
    on: Mapping[str, Any] = field(default_factory=dict)
    # starts processes where it takes effect (Ray actors, torchrun): the slow set
    slow: bool = False

    @property
    def label(self) -> str:
        return self.key if not self.on else f"{self.key}[with {', '.join(self.on)}]"


LORA = {"value.lora": {}}
TD = {"value.target": "td_lambda", "value.prior": "none"}
NO_PRIOR = {"value.prior": "none"}  # the default
ARGMAX = {"reweight.scheme": "argmax"}  # the default
IMPLICIT = {"search.implicit_reward": {"tuned": OTHER_LM, "untuned": LM}}

CHANGES = [
    Change("run_name", "other"),
    Change("seed", 4),
    Change("seed", 4, on=ARGMAX),
    Change("iterations", 3),
    Change("cache_dir", SCRATCH),
    Change("policy.model", OTHER_LM),
    Change("policy.dtype", "bfloat16"),
    Change("policy.max_model_len", 64),
    Change("policy.trust_remote_code", True),
    Change("policy.gpu_memory_utilization", 0.5),
    Change("policy.cpu_kv_cache_gib", 2),
    Change("policy.tensor_parallel_size", 2),
    Change("policy.prompts_per_call", 1),
    Change("data.dataset", OTHER_DATASET),
    Change("data.train_split", "extra"),
    Change("data.eval_split", "extra"),
    Change("data.split_field", "part"),
    Change("data.prompt_field", "text"),
    Change("data.reference_field", "gold"),
    Change("data.id_field", "uid"),
    Change("data.prompt_template", "Summarize: {prompt}"),
    Change("data.use_chat_template", True),
    Change("data.prompts_per_iteration", 3),
    Change("data.eval_prompts", 3),
    Change("reward.components", [{"type": "length_penalty", "options": {"target_words": 4}}]),
    Change("reward.components", [{"type": "length_penalty"}], on=NO_PRIOR),
    Change("reward.batch_size", 1),
    Change("sampling.temperature", 0.5),
    Change("sampling.top_p", 0.5),
    Change("sampling.top_k", 3),
    Change("sampling.max_new_tokens", 3),
    Change("sampling.stop", ["e"]),  # most of the tiny vocabulary's words hold an e
    Change("rollout.samples", 3),
    Change("search.beams", 3),
    Change("search.children", 3),
    Change("search.chunk_tokens", 2),
    Change("search.selection", "top_w"),
    Change("search.max_candidates", 16),
    Change("search.implicit_reward", IMPLICIT["search.implicit_reward"]),
    Change("search.implicit_reward.tuned", SCRATCH, on=IMPLICIT),
    Change("search.implicit_reward.untuned", SCRATCH, on=IMPLICIT),
    Change("search.implicit_reward.beta", 2.0, on=IMPLICIT),
    Change("search.rejection.samples", 4),
    Change("search.rejection.keep_fraction", 0.25),
    Change("search.rejection.chunk_tokens", 2),
    Change("reweight.scheme", "weighted"),
    Change("reweight.beta", 0.1),
    Change("reweight.resample_size", 3),
    Change("reweight.beta", 0.1, on=ARGMAX),
    Change("reweight.resample_size", 3, on=ARGMAX),
    Change("value.backbone", OTHER_LM),
    Change("value.num_layers", 2),
    Change("value.beta", 0.5),
    Change("value.max_length", 16),
    Change("value.target", "reward"),
    Change("value.head", "vocabulary"),
    Change("value.prior", "none"),
    Change("value.prior_stride", 1),
    Change("value.prior_stride", 1, on=NO_PRIOR),
    Change("value.pack_candidates", True),
    Change("value.init_from_previous", False),
    Change("value.processes", 2, slow=True),
    Change("value.score_batch_size", 1),
    Change("value.score_dtype", "bfloat16"),
    Change("value.score_device", "cuda"),
    Change("value.training.learning_rate", 1e-3),
    Change("value.training.adam_epsilon", 0.1),
    Change("value.training.lr_scheduler_type", "constant"),
    Change("value.training.warmup_steps", 1),
    Change("value.training.num_train_epochs", 2),
    Change("value.training.per_device_train_batch_size", 4),
    Change("value.training.gradient_accumulation_steps", 2),
    Change("value.training.weight_decay", 0.5),  # any TrainingArguments field passes through
    Change("value.training.save_steps", 0.5),
    Change("value.training.save_total_limit", 2),
    Change("value.lora", {}),
    Change("value.lora.r", 4, on=LORA),
    Change("value.lora.alpha", 8.0, on=LORA),
    Change("value.lora.dropout", 0.1, on=LORA),
    Change("value.lora.target_modules", ["q_proj"], on=LORA),
    Change("value.td.trace_decay", 0.5),
    Change("value.td.discount", 0.5),
    Change("value.td.target_updates", 1),
    Change("value.td.trace_decay", 0.5, on=TD),
    Change("value.td.discount", 0.5, on=TD),
    Change("value.td.target_updates", 1, on=TD),
    Change("ivl.backbone", OTHER_LM),
    Change("ivl.num_layers", 1),
    Change("ivl.connection", "log_probs"),
    Change("ivl.norm_penalty", 0.5),
    Change("ivl.demonstrations", 4),
    Change("ivl.response_field", "gold"),
    Change("ivl.train_base", OTHER_LM),
    Change("ivl.max_length", 32),
    Change("ivl.training.learning_rate", 1e-3),
    Change("ivl.training.adam_epsilon", 0.1),
    Change("ivl.training.lr_scheduler_type", "constant"),
    Change("ivl.training.warmup_steps", 1),
    Change("ivl.training.num_train_epochs", 2),
    Change("ivl.training.per_device_train_batch_size", 4),
    Change("ivl.training.gradient_accumulation_steps", 2),
    Change("decode.mode", "base"),
    Change("decode.final_pick", "value"),
    Change("decode.token_top_k", 3),
    Change("decode.guidance_beta", 2.0),
    Change("decode.args_weight", 2.0),
    Change("decode.greedy", True),
    Change("eval.enabled", False),
    Change("eval.baselines", ["base"]),
    Change("store.root", SCRATCH),
    Change("store.cache", SCRATCH),
    Change("store.options", {"endpoint_url": "http://127.0.0.1:9000"}),
    Change("ray.workers", 2, slow=True),
    Change("ray.address", "auto"),
    Change("ray.cpus_per_worker", 2.0),
    Change("ray.gpus_per_worker", 1.0),
    Change("report.baseline", "base"),
    Change("report.methods", ["base"]),
    Change("report.reward_winrate", False),
    Change("report.pairwise_judge", "summary"),
    Change("report.alpaca_eval", True),
    Change("report.max_prompts", 3),
    Change("report.judge.model", "other"),
    Change("report.judge.base_url", "http://judge/v1"),
    Change("report.judge.api_key_env", "JUDGE_KEY"),
    Change("report.judge.api_key_secret", "judge-key"),
    Change("report.judge.max_tokens", 8),
    Change("report.judge.max_retries", 1),
    Change("report.judge.concurrency", 1),
    Change("report.judge.constrain_format", True),
]

# Settings no stage can run with here, on the transformers engine of a CPU machine.
SERVED = "an endpoint engine's setting: needs a served policy"
NOT_RUN_HERE = {
    "policy.engine": "the other engines are vLLM (minutes to start on a CPU) or an endpoint",
    "policy.compile": "compiles vLLM's model; refused with the transformers engine",
    "policy.endpoint.base_url": SERVED,
    "policy.endpoint.model": SERVED,
    "policy.endpoint.api_key_env": SERVED,
    "policy.endpoint.prompt_as_token_ids": SERVED,
    "policy.endpoint.supports_top_k": SERVED,
    "policy.endpoint.timeout_s": SERVED,
    "policy.endpoint.max_retries": SERVED,
    "policy.endpoint.retry_delay_s": SERVED,
    "policy.endpoint.concurrency": SERVED,
}

# (stage, change) where the id changes although the output does not, on purpose: the comments of
# iro/pipeline/identity.py say why.
ID_ONLY = {
    ("reweight", "seed[with reweight.scheme]"),
    ("reweight", "reweight.resample_size[with reweight.scheme]"),
    ("value", "reward.components[with value.prior]"),
    ("value", "value.prior_stride[with value.prior]"),
    ("value", "value.training.save_steps"),
    ("value", "value.training.save_total_limit"),
}


# -- the stages: what the pipeline's build runs, and the output it keeps --


def table_digest(table: pd.DataFrame) -> str:
    cells = pd.util.hash_pandas_object(table, index=False).to_numpy()
    return hashlib.sha256(repr(list(table.columns)).encode() + cells.tobytes()).hexdigest()


def build_rollout(cfg: RunConfig, work: Path) -> str:
    """Pipeline.rollout for iteration 1: N plain samples for the iteration's training prompts."""
    train = load_prompts(cfg.data, cfg.data.train_split)
    prompts = iteration_slice(train, 1, cfg.data.prompts_per_iteration, cfg.seed)
    settings = rollout_settings(cfg, 1)
    return table_digest(generate(cfg, prompts, settings, [], cfg.seed * 1000 + 1, guided=False))


def build_score(cfg: RunConfig, work: Path) -> str:
    return table_digest(score_rows(cfg, CANDIDATES))


def build_reweight(cfg: RunConfig, work: Path) -> str:
    r = cfg.reweight
    table, metrics = reweight(SCORED, r.scheme, r.beta, r.resample_size, seed=cfg.seed)
    return table_digest(table) + json.dumps(metrics, sort_keys=True)


def build_value(cfg: RunConfig, work: Path) -> str:
    """Pipeline.train_value for V_1 (no previous value model): the saved model's files."""
    train_value(cfg, REWEIGHTED, None, work / "model", work / "checkpoints")
    files = sorted((work / "model").iterdir())
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()


@dataclass(frozen=True)
class Stage:
    kind: str  # its name in iro.pipeline.identity
    build: Callable[[RunConfig, Path], str]  # a digest of what the stage stores

    def __repr__(self) -> str:
        return self.kind


STAGES = [
    Stage("sample_rollout", build_rollout),
    Stage("score", build_score),
    Stage("reweight", build_reweight),
    Stage("value", build_value),
]


def artifact_id(stage: Stage, cfg: RunConfig) -> str:
    """The stage's id for `cfg` with its parents held fixed: the store hashes the stage's config
    slice with its version and its parents' ids."""
    return ArtifactStore("unused").artifact_id(stage.kind, 1, config_slice(cfg, stage.kind), [])


def run(stage: Stage, cfg: RunConfig, work: Path) -> str:
    try:
        return stage.build(cfg, work)
    finally:
        if cfg.ray.workers > 1:
            sharding.shutdown()  # the local cluster the build started


@pytest.fixture(scope="module")
def baseline(world, tmp_path_factory) -> Callable[[Stage, Mapping[str, Any]], str]:
    """Each stage's output with BASE and a change's `on` settings, built once per module."""
    outputs: dict[tuple[str, str], str] = {}

    def output(stage: Stage, on: Mapping[str, Any]) -> str:
        key = (stage.kind, json.dumps(on, sort_keys=True))
        if key not in outputs:
            work = tmp_path_factory.mktemp(f"baseline-{stage.kind}")
            outputs[key] = run(stage, world.config(on), work)
        return outputs[key]

    return output


# -- the schema's settings, walked without the identity table --


def _sections(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, UnionType):
        return [t for arg in get_args(annotation) for t in _sections(arg)]
    return []


def schema_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> set[str]:
    """Every leaf setting of the schema as a dotted key, optional sections included."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        sections = _sections(info.annotation)
        if sections:
            keys |= schema_keys(sections[0], f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


# -- the tests --


def test_every_setting_of_the_schema_is_changed_here_or_said_why_not():
    changed = {c.key for c in CHANGES}
    missing = schema_keys() - changed - set(NOT_RUN_HERE)
    assert not missing, f"add a Change to CHANGES for {sorted(missing)}"
    assert not set(NOT_RUN_HERE) & changed
    assert set(NOT_RUN_HERE) <= schema_keys()


@pytest.mark.parametrize("stage", STAGES, ids=repr)
def test_a_stage_rebuilds_the_same_output_from_the_same_settings(stage, baseline, world, tmp_path):
    """Without this, an output that differs would say nothing about the setting."""
    assert run(stage, world.config({}), tmp_path) == baseline(stage, {})


@pytest.mark.parametrize(
    ("stage", "change"),
    [
        pytest.param(
            stage,
            change,
            id=f"{stage.kind}:{change.label}",
            marks=pytest.mark.slow if change.slow else (),
        )
        for stage in STAGES
        for change in CHANGES
    ],
)
def test_a_setting_changes_the_id_exactly_when_it_changes_the_output(
    stage: Stage, change: Change, baseline, world, tmp_path
):
    before = world.config(change.on)
    after = world.config({**change.on, change.key: change.value})
    assert before != after, f"{change.key} = {change.value!r} is not a change"
    output_changed = run(stage, after, tmp_path) != baseline(stage, change.on)
    id_changed = artifact_id(stage, after) != artifact_id(stage, before)
    if (stage.kind, change.label) in ID_ONLY:
        assert id_changed and not output_changed, (
            f"{change.label} is in ID_ONLY for {stage.kind}, which no longer holds: update "
            "ID_ONLY and the comments of iro/pipeline/identity.py"
        )
        return
    assert output_changed == id_changed, (
        f"{change.label} changes what {stage.kind} builds but not its id: a stored artifact "
        "built with the old setting would be reused; add it to the stage's reads in "
        "iro/pipeline/identity.py"
        if output_changed
        else f"{change.label} changes the {stage.kind} id but not what it builds: drop it from "
        "the stage's reads in iro/pipeline/identity.py, or say there why it stays and add it "
        "to ID_ONLY"
    )
