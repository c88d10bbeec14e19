"""Train V_k on a reweighted table: value.* as trainer arguments, the value model read from and
saved to the store's directories. The algorithms (targets, TD(lambda) rounds, the loss) are
`iro.valuefn`'s."""

from __future__ import annotations

import importlib.util
import logging
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch

from iro.core.config import ConfigError, RunConfig
from iro.core.errors import out_of_memory
from iro.core.models import resolve_model
from iro.pipeline.scoring import build_run_reward
from iro.pipeline.trainer_args import pipeline_fixed, trainer_kwargs
from iro.valuefn.distributed import train_in_processes
from iro.valuefn.model import LoraSpec, TokenValueModel
from iro.valuefn.targets import prefix_priors, value_rows
from iro.valuefn.td_rounds import TDRounds, train_td_rounds
from iro.valuefn.training import ValueTrainingArguments, train_value_model

log = logging.getLogger(__name__)

# Fixed so that a killed training resumes from its last checkpoint exactly where it stopped.
RESUME_FIXED = {
    "save_strategy": "steps",
    "save_only_model": False,
    "resume_from_checkpoint": None,
    "ignore_data_skip": False,
}
# Set by the pipeline whatever value.training says, and why (for the error naming them).
RESERVED = {
    "output_dir": "the stage's work directory in the store",
    "max_length": "value.max_length",
    "seed": "the config's seed",
    "logging_steps": "the pipeline's logging",
    "use_cpu": "the pipeline's device choice",
    "disable_tqdm": "the pipeline's logging",
    "report_to": "the pipeline's logging",
    "save_strategy": "resume: checkpoints every save_steps",
    "save_only_model": "resume: needs the optimizer, scheduler and RNG state",
    "resume_from_checkpoint": "resume: the newest checkpoint in the work directory",
    "ignore_data_skip": "resume: continues mid-epoch at the next batch",
}
# Checkpoint settings a user may change (value.training.save_steps, .save_total_limit):
# a checkpoint at every quarter of the training (a ratio < 1 is of the total steps), and only the
# newest one kept on disk. Both are part of the value artifact's id, as all of value.training is.
CHECKPOINT_DEFAULTS = {"save_steps": 0.25, "save_total_limit": 1}


def _check_deepspeed(given: dict[str, Any]) -> None:
    """Stop at the config, not deep in the trainer, when DeepSpeed is asked for but absent."""
    if given.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"value.training.deepspeed is set ({given['deepspeed']!r}) but DeepSpeed is not "
            "installed: pip install deepspeed on the GPU machine (ZeRO runs on CUDA devices), "
            "or remove the key"
        )


def check_processes(processes: int, cuda_devices: int) -> None:
    """Data-parallel processes on GPUs take one GPU each (NCCL refuses two on one); on a machine
    without CUDA they share the CPU cores (gloo)."""
    if 0 < cuda_devices < processes:
        raise ConfigError(
            f"value.processes is {processes}, but this machine has {cuda_devices} CUDA "
            "devices: one process per GPU"
        )


def training_kwargs(cfg: RunConfig, work_dir: Path) -> dict[str, Any]:
    """`value.training` as given, plus what the pipeline fixes (paths, seed, device, logging,
    checkpoints for resume; see RESERVED): ValueTrainingArguments' keyword arguments, as JSON
    values (a torchrun job carries them in a file)."""
    given = cfg.value.training.model_dump()
    fixed = {**pipeline_fixed(work_dir, cfg.value.max_length, cfg.seed), **RESUME_FIXED}
    arguments = trainer_kwargs(
        "value.training",
        given,
        ValueTrainingArguments,
        "TrainingArguments",
        fixed,
        defaults=CHECKPOINT_DEFAULTS,
        reasons=RESERVED,
    )
    _check_deepspeed(given)
    check_processes(cfg.value.processes, torch.cuda.device_count())
    return arguments


def training_arguments(cfg: RunConfig, work_dir: Path) -> ValueTrainingArguments:
    return ValueTrainingArguments(**training_kwargs(cfg, work_dir))


def lora_spec(cfg: RunConfig) -> LoraSpec | None:
    """value.lora for `train_value_model`; None trains every weight."""
    lora = cfg.value.lora
    if lora is None:
        return None
    return LoraSpec(lora.r, lora.alpha, lora.dropout, tuple(lora.target_modules))


def launched(cfg: RunConfig) -> bool:
    """Whether value training runs as a torchrun job: on value.processes > 1, and with DeepSpeed
    even on one (it sets up torch.distributed, which must not meet vLLM's group here)."""
    return cfg.value.processes > 1 or bool(cfg.value.training.model_dump().get("deepspeed"))


LAUNCH = "launch"  # the torchrun job's files, in the training's work directory


def fit(
    cfg: RunConfig, model: TokenValueModel, tokenizer, rows: datasets.Dataset, work_dir: Path
) -> tuple[TokenValueModel, dict[str, float]]:
    """Train `model` on `rows`, resuming from the checkpoints in `work_dir`; returns the trained
    model and the metrics. In this process the model is trained in place; as a torchrun job
    (`launched`) a new one is read back and `model` is left as it was."""
    arguments = training_kwargs(cfg, work_dir)
    if not launched(cfg):
        args = ValueTrainingArguments(**arguments)
        return model, train_value_model(
            model, tokenizer, rows, args, resume=True, lora=lora_spec(cfg)
        )
    return train_in_processes(
        model, tokenizer, rows, arguments, work_dir / LAUNCH, cfg.value.processes, lora_spec(cfg)
    )


def memory_knobs(cfg: RunConfig) -> dict[str, tuple[object, str]]:
    """What lowers value training's memory use (each changes the value artifact's id)."""
    t = cfg.value.training
    return {
        "value.training.per_device_train_batch_size": (
            t.per_device_train_batch_size,
            "lower it and raise value.training.gradient_accumulation_steps "
            f"(now {t.gradient_accumulation_steps}) to keep the effective batch",
        ),
        "value.max_length": (cfg.value.max_length, "shorter training texts"),
    }


def train_value(
    cfg: RunConfig, table: pd.DataFrame, init_dir: Path | None, out_dir: Path, work_dir: Path
) -> dict[str, float]:
    """Train V_k on the reweighted table (from V_{k-1} when given) and save it to `out_dir`.

    `work_dir` holds the trainer's checkpoints and must outlive a killed process (the store's
    per-artifact work directory, not the staging directory): training resumes from the newest
    checkpoint found there (td_lambda: in the current round's subdirectory,
    `iro.valuefn.td_rounds`). Those checkpoints include torch-pickled optimizer and RNG state, which is acceptable only
    because this pipeline wrote them itself into its own store.

    With value.processes > 1 (or DeepSpeed) each training is a torchrun job (`fit`,
    `iro.valuefn.distributed`) whose files lie in `work_dir`/launch; it checkpoints into `work_dir`
    too, and a relaunch resumes as above (value.processes is part of the artifact's id, so the
    checkpoints found there were written by as many processes). A job killed after it trained
    but before this process saved the model retrains nothing: it resumes at its last step.
    """
    from transformers import AutoTokenizer

    v = cfg.value
    torch.manual_seed(cfg.seed)
    if init_dir is not None:
        model = TokenValueModel.load(init_dir)
        tokenizer = AutoTokenizer.from_pretrained(init_dir)
    else:
        backbone = resolve_model(v.backbone, cfg.cache_dir)
        model = TokenValueModel.from_causal_lm(
            backbone, v.num_layers, cfg.policy.trust_remote_code, head=v.head
        )
        tokenizer = AutoTokenizer.from_pretrained(backbone)
    priors = None
    model.prior = None if v.prior == "none" else v.prior
    if v.prior == "reward":
        priors = prefix_priors(table, tokenizer, build_run_reward(cfg).score, v.prior_stride)
    rows = value_rows(table, v.target, v.pack_candidates, priors)
    with out_of_memory("value training", memory_knobs(cfg)):
        if v.target == "td_lambda":
            model, metrics = train_td_rounds(
                model,
                tokenizer,
                rows,
                work_dir,
                TDRounds(v.td.target_updates, v.td.trace_decay, v.td.discount),
                partial(fit, cfg),
                trained=init_dir is not None,
                max_length=v.max_length,
                batch_size=v.training.per_device_train_batch_size,
            )
        else:
            model, metrics = fit(cfg, model, tokenizer, rows, work_dir)
    model.save(out_dir, tokenizer)
    return metrics
