"""Data-parallel value training: `train_value_model` in N processes under torchrun.

The caller writes a job directory (the initial model as safetensors, the training rows as
parquet, the training arguments and LoRA settings as JSON) and runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m iro.valuefn.distributed DIR

Every process reads the job and trains; TRL's trainer finds the torchrun environment through
accelerate, wraps the model in DDP (or DeepSpeed, with `deepspeed` in the arguments), gives each
process its share of every batch and averages the gradients. Process 0 then saves the trained
model and, last, its metrics (the marker that the job finished), which the caller reads back.

A separate process tree, not this process: vLLM initialises a torch.distributed process group in
the pipeline's process, and a training group must not meet it. Nothing crosses as a pickle.

Resume: the checkpoints go to the arguments' `output_dir` as in one process (written by process
0, with each process's RNG state), so a job launched again on the same number of processes
continues from the newest complete one; the initial model is written again, to the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import torch

from iro.core.fsutil import atomic_write_json
from iro.valuefn.model import LoraSpec, TokenValueModel
from iro.valuefn.training import ValueTrainingArguments, train_value_model

log = logging.getLogger(__name__)

JOB = "job.json"
ROWS = "rows.parquet"
INITIAL = "initial"  # the model training starts from, and its tokenizer
TRAINED = "trained"
METRICS = "metrics.json"  # written last: the job finished
LOG = "torchrun.log"


def distributed_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with what data parallelism needs unless they say otherwise: gloo where there
    is no CUDA (NCCL is GPU-only), and no search for unused parameters, as a value model uses all
    of them in every forward (the search costs a pass and breaks with gradient checkpointing)."""
    defaults: dict[str, Any] = {"ddp_find_unused_parameters": False}
    if not torch.cuda.is_available():
        defaults["ddp_backend"] = "gloo"
    return {**defaults, **arguments}


def launch_command(directory: Path, processes: int) -> list[str]:
    """torchrun on this machine (`--standalone` picks a free rendezvous port)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "iro.valuefn.distributed", str(directory),
    ]  # fmt: skip


def write_job(
    directory: Path,
    model: TokenValueModel,
    tokenizer,
    rows: datasets.Dataset,
    arguments: dict[str, Any],
    lora: LoraSpec | None,
) -> None:
    """The job's files; results of an earlier launch are removed so none is read as this one's."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METRICS).unlink(missing_ok=True)
    shutil.rmtree(directory / TRAINED, ignore_errors=True)
    model.save(directory / INITIAL, tokenizer)
    rows.to_parquet(str(directory / ROWS))
    job = {
        "arguments": arguments,
        "lora": dataclasses.asdict(lora) if lora is not None else None,
        "resume": True,
    }
    atomic_write_json(directory / JOB, job)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def train_in_processes(
    model: TokenValueModel,
    tokenizer,
    rows: datasets.Dataset,
    arguments: dict[str, Any],
    directory: Path,
    processes: int,
    lora: LoraSpec | None = None,
) -> tuple[TokenValueModel, dict[str, float]]:
    """`train_value_model(model, tokenizer, rows, ValueTrainingArguments(**arguments), resume=True,
    lora=lora)` on `processes` data-parallel processes; returns the trained model (a new object,
    `model` is left as it was) and the metrics. `arguments` must be JSON (a config's values)."""
    write_job(directory, model, tokenizer, rows, arguments, lora)
    command = launch_command(directory, processes)
    log.info("value training on %d processes: %s (output in %s)",
             processes, " ".join(command), directory / LOG)  # fmt: skip
    with (directory / LOG).open("a") as output:
        done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not (directory / METRICS).is_file():
        raise RuntimeError(
            f"value training on {processes} processes failed (exit status {done.returncode}); "
            f"the end of {directory / LOG}:\n{_tail(directory / LOG)}"
        )
    metrics = json.loads((directory / METRICS).read_text())
    return TokenValueModel.load(directory / TRAINED), metrics


def run_job(directory: Path) -> None:
    """One process's part of the job in `directory` (torchrun's environment names which)."""
    from transformers import AutoTokenizer

    job = json.loads((directory / JOB).read_text())
    model = TokenValueModel.load(directory / INITIAL)
    tokenizer = AutoTokenizer.from_pretrained(directory / INITIAL)
    # read into memory: datasets' parquet loader would build a cache, once per process
    rows = datasets.Dataset(pq.read_table(directory / ROWS))
    args = ValueTrainingArguments(**distributed_arguments(job["arguments"]))
    lora = None
    if job["lora"] is not None:
        lora = LoraSpec(**{**job["lora"], "target_modules": tuple(job["lora"]["target_modules"])})
    metrics = train_value_model(model, tokenizer, rows, args, resume=job["resume"], lora=lora)
    if args.process_index == 0:
        model.save(directory / TRAINED, tokenizer)
        atomic_write_json(directory / METRICS, metrics)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: torchrun ... -m iro.valuefn.distributed JOB_DIRECTORY")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run_job(Path(argv[0]))
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # no process leaves while process 0 still saves
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
