"""Which settings an artifact's id includes: exactly the settings that can change its content.

An artifact's id hashes (stage, stage version, config slice, parent ids). The slice is made here,
from one table: for each kind of stage, the config keys its build reads. A key is either read by
at least one stage (and then changes exactly those stages' ids), or listed below as not content
(where and how fast work runs), or as structure (which stages run, and their parents). A test
walks the whole schema: a new key without an entry here fails it. Another runs the stages with
each key changed: a key changes a stage's id exactly when it changes what the stage builds, and
the comments below say why the few exceptions stay in their ids.

Keys are dotted paths; an entry that names a section ("reweight") covers every key under it.
"""

from __future__ import annotations

from typing import Any

from iro.core.config import RunConfig
from iro.core.engines.factory import resolve_backend
from iro.core.methods import METHODS
from iro.core.precision import compute_device

# What every generation reads: the policy and how it is prompted, the sampler, the seed.
PROMPTS = (
    "policy.model",
    "policy.dtype",
    "data.dataset",
    "data.split_field",
    "data.prompt_field",
    "data.reference_field",
    "data.id_field",
    "data.prompt_template",
    "data.use_chat_template",
    "seed",
)
# The engine is the resolved back end (auto -> vllm or hf): the back ends draw different samples
# for the same seeds, so switching engine must not reuse the other's samples.
GENERATION = (
    *PROMPTS,
    "policy.engine",
    "policy.compile",  # compiled kernels round differently: other samples
    "policy.endpoint.base_url",
    "policy.endpoint.model",
    "policy.endpoint.prompt_as_token_ids",
    "policy.endpoint.supports_top_k",
    "sampling",
)
# Token-level methods run on transformers with their own top-k and no stop strings.
TOKEN_GENERATION = (*PROMPTS, "sampling.temperature", "sampling.max_new_tokens")
TRAIN_PROMPTS = ("data.train_split", "data.prompts_per_iteration")
EVAL_PROMPTS = ("data.eval_split", "data.eval_prompts")
# The IRO search as a rollout runs it (it keeps every final candidate: no final pick).
GUIDED_SEARCH = tuple(k for k in METHODS["iro"].reads if k != "decode.final_pick")

STAGE_READS: dict[str, tuple[str, ...]] = {
    # iteration 1: N plain samples per prompt from pi_base
    "sample_rollout": (*GENERATION, *TRAIN_PROMPTS, "rollout.samples"),
    # iterations >= 2: the search guided by V_1..V_{k-1} (their ids are the parents), whose
    # reward prior (value.prior = reward) reads the run's reward on every step
    "guided_rollout": (*GENERATION, *TRAIN_PROMPTS, *GUIDED_SEARCH, "reward.components"),
    "score": ("reward.components",),
    # only softmax draws: argmax and weighted read neither reweight.resample_size nor the seed
    # (reweight.beta they do, for the weights or the effective sample size); both stay in the id
    # under every scheme, so that the artifacts already built keep their ids
    "reweight": ("reweight", "seed"),
    # value.beta is not here: it only weighs V_k at decoding time (guided rollouts, evaluation)
    "value": (
        "value.backbone",
        "value.num_layers",
        "value.max_length",
        "value.target",
        "value.td",
        "value.head",
        "value.pack_candidates",
        "value.prior",
        # the stride and the prior's reward (read on prefixes) matter only with value.prior:
        # reward; they stay in the id without a prior too, so that the value models already
        # built keep their ids
        "value.prior_stride",
        "reward.components",
        # passed to the trainer as written, so all of it counts, even the checkpoint cadence
        # (save_steps, save_total_limit), which changes no weight: no list here could say which
        # of the trainer's many arguments shape the weights
        "value.training",
        "value.lora",
        "value.processes",  # the effective batch is processes x the per-device batch
        "seed",
    ),
    **{
        f"eval-{name}": (
            *(GENERATION if method.runs_on == "search" else TOKEN_GENERATION),
            *EVAL_PROMPTS,
            "reward.components",
            *method.reads,
        )
        for name, method in METHODS.items()
    },
    # the IVL residual: demonstrations from the training split, the base it is trained against
    "ivl": (*PROMPTS, "data.train_split", "ivl"),
    "report": (
        "report.baseline",
        "report.methods",
        "report.reward_winrate",
        "report.pairwise_judge",
        "report.alpaca_eval",
        "report.max_prompts",
        "report.judge.model",
        "report.judge.base_url",
        "report.judge.max_tokens",
        "report.judge.constrain_format",
    ),
}

# Where and how fast work runs, and where things are kept: never part of an id.
NOT_CONTENT = (
    "cache_dir",
    "store.root",
    "store.cache",
    "store.options",
    "ray",  # shards merge into exactly the single-process result (per-request seeds)
    "policy.max_model_len",  # bounds prompt length (an error), not what is sampled
    "policy.trust_remote_code",  # a permission: the loaded model is the same when it is granted
    "policy.gpu_memory_utilization",
    "policy.cpu_kv_cache_gib",
    "policy.prompts_per_call",  # per-request seeds: no effect on samples (but see config_slice)
    "policy.tensor_parallel_size",
    "policy.endpoint.api_key_env",
    "policy.endpoint.timeout_s",
    "policy.endpoint.max_retries",
    "policy.endpoint.retry_delay_s",
    "policy.endpoint.concurrency",
    "reward.batch_size",
    "search.max_candidates",  # a guard on w*k, checked when the config loads
    "value.score_batch_size",
    "report.judge.api_key_env",
    "report.judge.api_key_secret",
    "report.judge.max_retries",
    "report.judge.concurrency",
)

# Which stages run and what their parents are; the parents' ids carry the effect.
STRUCTURE = (
    "run_name",
    "iterations",
    "eval.enabled",
    "eval.baselines",
    "value.init_from_previous",  # V_{k-1} is V_k's parent or not
    "decode.mode",  # what `iro decode` runs; evaluation names its method itself
)


def _covers(entry: str, key: str) -> bool:
    return key == entry or key.startswith(entry + ".")


def stages_reading(key: str) -> set[str]:
    return {stage for stage, reads in STAGE_READS.items() if any(_covers(e, key) for e in reads)}


def is_accounted_for(key: str) -> bool:
    """Every config key is read by some stage, or declared not content, or structure."""
    declared = (*NOT_CONTENT, *STRUCTURE)
    return bool(stages_reading(key)) or any(_covers(e, key) for e in declared)


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, dotted + "."))
        else:
            leaves[dotted] = value
    return leaves


# Keys added after artifacts existed, at the value those artifacts were made with
PREDATED = {
    "value.head": "scalar",
    "value.processes": 1,
    "policy.compile": False,
    "value.score_device": "cpu",
}


def _unselected(chosen: dict[str, Any], key: str) -> bool:
    """Settings that change nothing unless another setting selects them (value.td without TD
    targets), or that are at the value every artifact made before the key existed was made
    with (PREDATED). Leaving them out keeps those artifacts' ids."""
    if key.startswith("value.td."):
        return chosen.get("value.target") != "td_lambda"
    return key in PREDATED and chosen[key] == PREDATED[key]


def config_slice(cfg: RunConfig, stage: str, value_models: int | None = None) -> dict[str, Any]:
    """The settings of `cfg` that the stage kind `stage` reads, as {dotted key: value}.

    Settings are recorded as used: the engine resolved, value.beta as the betas of the
    `value_models` value models that guide (beta_3 does not change what V_1, V_2 produce), and
    the device that generates and trains (a GPU's samples and weights differ from a CPU's; under
    Ray, the workers' device).
    """
    reads = STAGE_READS[stage]
    leaves = _leaves(cfg.model_dump(mode="json"))
    chosen = {k: v for k, v in leaves.items() if any(_covers(e, k) for e in reads)}
    for key in [k for k in chosen if _unselected(chosen, k)]:
        del chosen[key]
    if "policy.engine" in chosen:
        chosen["policy.engine"] = resolve_backend(cfg.policy.engine)
        # the transformers engine seeds a whole batch from its first request: there, unlike on
        # vLLM or an endpoint (a seed per request), how prompts are grouped changes the samples
        if chosen["policy.engine"] == "hf":
            chosen["policy.prompts_per_call"] = cfg.policy.prompts_per_call
    if "value.beta" in chosen and value_models is not None:
        chosen["value.beta"] = cfg.value.betas(value_models)
    if stage not in ("score", "reweight", "report"):
        chosen["device"] = _device(cfg, stage)
    return chosen


# Stages whose generation runs the chunk search, which ray.workers > 1 shards over Ray actors.
SEARCH_STAGES = {
    "sample_rollout",
    "guided_rollout",
    *(f"eval-{name}" for name, method in METHODS.items() if method.runs_on == "search"),
}


def _device(cfg: RunConfig, stage: str) -> str:
    """Where the stage computes: the Ray workers' device for a sharded search (a GPU each when
    ray.gpus_per_worker > 0), else this process's."""
    if stage in SEARCH_STAGES and cfg.ray.workers > 1:
        return "cuda" if cfg.ray.gpus_per_worker > 0 else "cpu"
    return compute_device()
