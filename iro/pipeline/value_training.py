"""Train V_k on a reweighted table: the pipeline's side of `valuefn.training`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch

from iro.core.config import ConfigError, RunConfig
from iro.core.errors import out_of_memory
from iro.core.fsutil import atomic_write_json
from iro.core.models import resolve_model
from iro.pipeline.scoring import build_run_reward
from iro.valuefn.distributed import train_in_processes
from iro.valuefn.model import LoraSpec, TokenValueModel
from iro.valuefn.td import lambda_returns
from iro.valuefn.training import (
    COLUMNS,
    PRIOR_COLUMNS,
    STATE_TARGETS,
    ValueCollator,
    ValueTrainingArguments,
    state_values,
    train_value_model,
)

log = logging.getLogger(__name__)


# (raw task inputs, response texts) -> the run's reward of each
RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def prefix_priors(
    table: pd.DataFrame, tokenizer, reward: RewardFn, stride: int
) -> tuple[list[list[int]], list[list[float]]]:
    """Per candidate: the states t = stride, 2*stride, ... and its full length (in the value
    model's tokens), and the reward of the response cut after t tokens, scored in one batch.

    An empty response has the one state t = 0.
    """
    ids = [tokenizer(r, add_special_tokens=False).input_ids for r in table["response"]]
    states = [sorted({*range(stride, len(i), stride), len(i)}) for i in ids]
    prompts = [p for p, s in zip(table["prompt"], states, strict=True) for _ in s]
    texts = [
        tokenizer.decode(i[:t], skip_special_tokens=True)
        for i, s in zip(ids, states, strict=True)
        for t in s
    ]
    started = time.time()
    flat = np.asarray(reward(prompts, texts), dtype=float).tolist()
    log.info("reward prior on %d prefixes of %d responses: %.1f s", len(texts), len(ids),
             time.time() - started)  # fmt: skip
    values, at = [], 0
    for s in states:
        values.append(flat[at : at + len(s)])
        at += len(s)
    return states, values


def value_rows(
    table: pd.DataFrame,
    target: str,
    pack: bool,
    priors: tuple[list[list[int]], list[list[float]]] | None = None,
) -> datasets.Dataset:
    """Training rows: a prompt and its candidates, with the reward or advantage each regresses to
    (td_lambda: the reward, from which `td_rows` computes the per-state targets).

    `pack`: one row per prompt holding all its candidates (the prompt is read once per row);
    otherwise one row per candidate, as the reweighted table has them. `priors`: per candidate,
    states and prior values (`prefix_priors`); the network then regresses the residual there.
    """
    regress_to = table["reward"]
    if target == "advantage":
        regress_to = table["reward"] - table["prompt_mean_reward"]
    states, values = priors if priors is not None else ([[]] * len(table), [[]] * len(table))
    frame = pd.DataFrame(
        {
            "prompt": table["prompt_text"],
            "responses": table["response"],
            "ended": table["ended"].astype(bool),
            "targets": regress_to.astype(float),
            "weights": table["weight"].astype(float),
            "prior_states": states,
            "prior_values": values,
        }
    )
    if pack:
        frame = frame.groupby("prompt", sort=False).agg(list).reset_index()
    else:
        frame = frame.assign(
            **{c: frame[c].map(lambda v: [v]) for c in (*COLUMNS[1:], *PRIOR_COLUMNS)}
        )
    return datasets.Dataset.from_pandas(frame[[*COLUMNS, *PRIOR_COLUMNS]], preserve_index=False)


# Set by the pipeline whatever value.training says, and why (for the error naming them).
RESERVED = {
    "output_dir": "the stage's work directory in the store",
    "max_length": "value.max_length",
    "seed": "the config's seed",
    "logging_steps": "the pipeline's logging",
    "use_cpu": "the pipeline's device choice",
    "disable_tqdm": "the pipeline's logging",
    "report_to": "the pipeline's logging",
    # a killed training resumes from its last checkpoint exactly where it stopped
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
    fixed = {
        "output_dir": str(work_dir),
        "max_length": cfg.value.max_length,
        "logging_steps": 5,
        "seed": cfg.seed,
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": True,
        "report_to": "none",
        "save_strategy": "steps",
        "save_only_model": False,
        "resume_from_checkpoint": None,
        "ignore_data_skip": False,
    }
    given = cfg.value.training.model_dump()
    known = {f.name for f in dataclasses.fields(ValueTrainingArguments)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"value.training: {unknown} are not TrainingArguments fields")
    reserved = sorted(set(given) & set(fixed))
    if reserved:
        reasons = "; ".join(f"{key}: {RESERVED[key]}" for key in reserved)
        raise ConfigError(f"value.training: {reserved} are set by the pipeline ({reasons})")
    _check_deepspeed(given)
    check_processes(cfg.value.processes, torch.cuda.device_count())
    return {**CHECKPOINT_DEFAULTS, **given, **fixed}


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


def td_rows(
    rows: datasets.Dataset, values: list[list[np.ndarray]], trace_decay: float, discount: float
) -> datasets.Dataset:
    """`rows` with `state_targets`: each response's lambda-returns from the target network's
    `values` at its states (`state_values`) and its reward (`targets`) at the end."""
    returns = [
        [
            lambda_returns(v, reward, trace_decay, discount).tolist()
            for v, reward in zip(row_values, rewards, strict=True)
        ]
        for row_values, rewards in zip(values, rows["targets"], strict=True)
    ]
    return rows.add_column(STATE_TARGETS, returns)


# A round's subdirectory of the work directory holds its trainer checkpoints, then its trained
# weights, then (written atomically, last) its marker: the round's metrics.
ROUND_MODEL = "model"
ROUND_DONE = "round.json"


def round_dir(work_dir: Path, r: int) -> Path:
    return work_dir / f"round-{r}"


def finished_rounds(work_dir: Path, rounds: int) -> list[dict[str, float]]:
    """The metrics of rounds 1, 2, ... finished in `work_dir`, up to the first without a marker."""
    done = []
    for r in range(1, rounds + 1):
        marker = round_dir(work_dir, r) / ROUND_DONE
        if not marker.is_file():
            break
        done.append(json.loads(marker.read_text()))
    return done


def train_td_rounds(
    cfg: RunConfig,
    model: TokenValueModel,
    tokenizer,
    rows: datasets.Dataset,
    work_dir: Path,
    trained: bool,
) -> tuple[TokenValueModel, dict[str, float]]:
    """Train on lambda-returns in `value.td.target_updates` rounds; returns the trained model.

    Each round reads V_target at every state with the model as the round starts (the target
    network, hard update), computes the lambda-returns and trains `value.training` on them.
    Round 1's target network is the initial model when it is `trained` (V_{k-1}). A fresh head
    is no value estimate: it gives about one constant at every state (0 before its targets are
    standardised, their mean after), and bootstrapping a constant leaves only lambda^(T-t) of
    the reward in G_t (gamma = 1; 0.95^50 < 8%), so the first rounds would mostly learn the
    constant. Round 1 from a fresh model is therefore Monte-Carlo (lambda = 1, as VAS starts),
    and the later rounds bootstrap from a model that already ranks responses.

    A killed process resumes at the first round without its marker (`finished_rounds`), from the
    previous round's saved weights, and within that round from its newest checkpoint.
    """
    td = cfg.value.td
    done = finished_rounds(work_dir, td.target_updates)
    if done:
        model = TokenValueModel.load(round_dir(work_dir, len(done)) / ROUND_MODEL)
        log.info("TD value training resumes after round %d of %d", len(done), td.target_updates)
    resumed = len(done)
    collator = ValueCollator(tokenizer, cfg.value.max_length)
    batch_size = cfg.value.training.per_device_train_batch_size
    for r in range(resumed + 1, td.target_updates + 1):
        trace_decay = td.trace_decay if trained or r > 1 else 1.0
        values = state_values(model, collator, rows, batch_size)
        targets = td_rows(rows, values, trace_decay, td.discount)
        directory = round_dir(work_dir, r)
        model, metrics = fit(cfg, model, tokenizer, targets, directory)
        model.save(directory / ROUND_MODEL, tokenizer)
        atomic_write_json(directory / ROUND_DONE, metrics)
        done.append(metrics)
    per_round = {f"round_{r}_{k}": m for r, ms in enumerate(done, 1) for k, m in ms.items()}
    return model, {**done[-1], **per_round, "rounds_resumed": float(resumed)}


def train_value(
    cfg: RunConfig, table: pd.DataFrame, init_dir: Path | None, out_dir: Path, work_dir: Path
) -> dict[str, float]:
    """Train V_k on the reweighted table (from V_{k-1} when given) and save it to `out_dir`.

    `work_dir` holds the trainer's checkpoints and must outlive a killed process (the store's
    per-artifact work directory, not the staging directory): training resumes from the newest
    checkpoint found there (td_lambda: in the current round's subdirectory, `train_td_rounds`).
    Those checkpoints include torch-pickled optimizer and RNG state, which is acceptable only
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
            trained = init_dir is not None
            model, metrics = train_td_rounds(cfg, model, tokenizer, rows, work_dir, trained)
        else:
            model, metrics = fit(cfg, model, tokenizer, rows, work_dir)
    model.save(out_dir, tokenizer)
    return metrics
