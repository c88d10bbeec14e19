"""Nothing lost, nothing wrong: a run killed with SIGKILL inside any stage, then rerun.

The rerun must reuse every artifact finished before the kill, end with exactly the artifacts of
an uninterrupted run with the same seeds (same ids, same file checksums), never show a partial
artifact, leave none of the killed process's staging or work directories behind, and not wait on
the locks the killed process held. Value training killed mid-epoch must resume from its last
checkpoint, not start over.

Each run is a real process (tests/kill_resume_child.py, a tiny run on the tiny models of
conftest and the transformers engine), held at a deterministic point by wrapping a function in
that process only, and killed with its whole process group. Every kill point costs a whole run
in two processes (~7 s of imports each), so the default set kills in three stages (value
training, the guided rollout, the report) and the mid-epoch value training, about a minute of CPU;
the other four stages of the matrix are marked slow, as is the embedded model's `iro run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from iro.core.store.local import ArtifactStore
from tests.test_remote_faults import tiny_config as remote_faults_config

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for a tiny run; the embedded model's gets EMBEDDED_TIMEOUT
EMBEDDED_TIMEOUT = 900
RUN = "kr"


def tiny_config(tmp: Path, model: Path, store: Path) -> Path:
    """Two iterations, 2 prompts each, a length reward; weighted reweighting keeps every
    candidate so that value training runs 8 steps (a checkpoint every 2) in iteration 1."""
    reward = [{"type": "length_penalty", "options": {"target_words": 2, "per_word": 0.1}}]
    config = remote_faults_config(tmp, model, reward) | {
        "run_name": RUN,
        "iterations": 2,
        "search": {"beams": 2, "children": 2, "chunk_tokens": 3},
        "eval": {"baselines": ["base"]},
        "store": {"root": str(store)},
    }
    # a large rate, so that a resume that replays or skips a batch shows in the values
    config["value"]["training"] = {
        "num_train_epochs": 2,
        "per_device_train_batch_size": 1,
        "learning_rate": 1e-2,
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def child_env(tmp: Path, tiny: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PREFECT_HOME": str(tmp / "prefect"),
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("PREFECT_API_URL", None)
    if tiny:
        # one thread: tiny matrices run several times faster, and results do not depend on
        # how many cores the machine has; no GPU: CPU kernels are deterministic
        env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def start(args: list[str], tmp: Path, log: Path, tiny: bool) -> subprocess.Popen:
    """A process in its own session, so that a kill reaches whatever it started too."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=child_env(tmp, tiny),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child and whatever it started (Prefect's server, vLLM's engine)."""
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_to_end(args: list[str], tmp: Path, name: str, tiny: bool = True) -> str:
    """Run a child to completion (no lock may block it: it must end in time)."""
    log, limit = tmp / f"{name}.log", TIMEOUT if tiny else EMBEDDED_TIMEOUT
    proc = start(args, tmp, log, tiny)
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"{name} did not finish in {limit} s:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def kill_at(args: list[str], hold: str, tmp: Path, tiny: bool = True) -> tuple[Path, int]:
    """Start a child held at `hold`, SIGKILL it (and its group) there; where it stopped and
    its pid."""
    ready, log = tmp / "ready", tmp / "killed.log"
    proc = start([*args, "--hold", hold, "--ready", str(ready)], tmp, log, tiny)
    try:
        deadline = time.monotonic() + (TIMEOUT if tiny else EMBEDDED_TIMEOUT)
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"never reached {hold} (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    return Path(ready.read_text()), proc.pid


def child(config: Path) -> list[str]:
    return ["-m", "tests.kill_resume_child", str(config)]


def artifacts(store: Path) -> dict[str, dict[str, str]]:
    """`stage/id` -> {file: sha256} of every artifact, each verified against its manifest (a
    directory without a complete manifest counts as a damaged artifact)."""
    checks = ArtifactStore(store).verify()
    assert [c.ref for c in checks if c.problem] == [], [c.problem for c in checks if c.problem]
    return {c.ref: json.loads((c.path / "manifest.json").read_text())["files"] for c in checks}


def hidden_leftovers(store: Path) -> list[Path]:
    """Staging directories in the stage directories and work directories under `.work/`."""
    staging = [p for p in store.glob("*/.*") if p.is_dir()]
    return sorted(staging + list(store.glob(".work/*/*")))


@dataclass(frozen=True)
class Reference:
    store: Path
    artifacts: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def reference(tiny_lm, tmp_path_factory) -> Reference:
    """One uninterrupted run: what every interrupted one must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    store = tmp / "store"
    log = run_to_end(child(tiny_config(tmp, tiny_lm, store)), tmp, "reference")
    assert "reusing" not in log
    found = artifacts(store)
    stages = sorted({ref.split("/")[0] for ref in found})
    assert stages == ["eval", "report", "reweight", "rollout", "score", "value"]
    assert hidden_leftovers(store) == []
    return Reference(store, found)


slow = pytest.mark.slow
# STAGE:N = the N-th build of that stage in the killed process: eval:1 is the base model's
# evaluation, rollout:2 is iteration 2's guided search, eval:2 evaluates pi_1.
KILL_POINTS = [
    pytest.param("rollout:1", id="rollout", marks=slow),
    pytest.param("score:1", id="scoring", marks=slow),
    pytest.param("reweight:1", id="reweighting", marks=slow),
    pytest.param("value:1", id="value-training"),
    pytest.param("rollout:2", id="guided-rollout"),
    pytest.param("eval:2", id="evaluation", marks=slow),
    pytest.param("report:1", id="report"),
]


@pytest.mark.parametrize("hold", KILL_POINTS)
def test_a_run_killed_in_a_stage_resumes_to_the_same_artifacts(hold, reference, tiny_lm, tmp_path):
    store = tmp_path / "store"
    config = tiny_config(tmp_path, tiny_lm, store)
    staging, pid = kill_at(child(config), hold, tmp_path)

    # killed with the stage's files written: they are in a hidden staging directory named after
    # the killed process, and no artifact of that id is visible
    stage = hold.split(":")[0]
    killed_id = staging.name.split(".")[1]
    assert staging.parent == store / stage and f".{pid}-" in staging.name
    assert any(staging.iterdir())
    finished = artifacts(store)
    assert (
        f"{stage}/{killed_id}" not in finished
        and ArtifactStore(store).find(stage, killed_id) is None
    )
    assert finished and set(finished) < set(reference.artifacts)
    written = {ref: (store / ref / "manifest.json").stat().st_mtime_ns for ref in finished}

    log = run_to_end(child(config), tmp_path, "rerun")

    # resumed from the last finished stage: each finished artifact reused, not rebuilt
    for ref in finished:
        done_stage, done_id = ref.split("/")
        assert f"reusing {done_stage} artifact {done_id}" in log
        assert f"building {done_stage} artifact {done_id}" not in log
    if stage != "report":  # `iro report` builds it without the pipeline's log line
        assert f"building {stage} artifact {killed_id}" in log
    assert {ref: (store / ref / "manifest.json").stat().st_mtime_ns for ref in finished} == written
    # the same artifacts as the uninterrupted run, byte for byte
    assert artifacts(store) == reference.artifacts
    # the killed process's staging (and any work directory) removed, its locks not in the way
    assert f"staging left by process {pid}" in log
    assert hidden_leftovers(store) == []
    assert f"runs/{RUN}/.lock was left by process {pid}" in log  # the report too takes it


def value_predictions(directory: Path, table: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The value model's value of each candidate, and the spread of its training targets."""
    from iro.valuefn.scoring import ValueEnsemble

    ensemble = ValueEnsemble.load([directory], [1.0], max_length=64, batch_size=8)
    scale = ensemble.members[0].model.target_scale
    values = ensemble.score(
        table["prompt_text"].tolist(), table["response"].tolist(), table["ended"].tolist()
    )
    return values, scale


def test_value_training_killed_mid_epoch_resumes_from_its_checkpoint(reference, tiny_lm, tmp_path):
    store = tmp_path / "store"
    config = tiny_config(tmp_path, tiny_lm, store)
    checkpoint, pid = kill_at(child(config), "checkpoint:1", tmp_path)

    # the trainer's checkpoint is in the store's work directory of the value artifact, not in
    # its staging directory (removed with the killed process's other leftovers)
    work = checkpoint.parent
    assert work.parent == store / ".work" / "value" and checkpoint.name == "checkpoint-2"
    assert (checkpoint / "model.safetensors").is_file()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["max_steps"] == 8 and state["epoch"] < 1

    log = run_to_end(child(config), tmp_path, "rerun")

    assert f"value training resumes from {checkpoint}" in log
    value = ArtifactStore(store).find("value", work.name)
    assert value is not None
    # as the trainer saw it once training began, not as the checkpoint's name says: it started
    # at step 2 with AdamW's step count restored, and ran only the 6 steps left of 8
    metrics = value.metrics
    assert (metrics["resumed_from_step"], metrics["optimizer_resumed_from_step"]) == (2, 2)
    assert (metrics["steps_run"], metrics["steps"]) == (6, 8)
    assert f"staging left by process {pid}" in log
    assert not work.exists()  # removed once the artifact is published
    # Tolerance: values may differ from the uninterrupted run's by 1e-4 of the targets' spread.
    # Resuming restores the weights (safetensors), AdamW's moments, the schedule, the RNG state
    # and the position in the epoch, so on CPU the remaining steps repeat the same float
    # operations and the result is bit-identical (observed: 0). The margin is for kernels that
    # are not bitwise reproducible (GPU atomics, other thread counts), and far below what a
    # faulty resume does: replaying the epoch's first batches (ignore_data_skip) moves these
    # values by 0.09 of the spread.
    uninterrupted = reference.store / "value" / work.name / "value_model"
    reweighted = value.manifest["parents"][0]
    table = ArtifactStore(store).find(reweighted["stage"], reweighted["id"]).table()
    resumed, scale = value_predictions(value.file("value_model"), table)
    expected, _ = value_predictions(uninterrupted, table)
    assert np.abs(resumed - expected).max() / scale < 1e-4


@pytest.mark.slow
def test_the_embedded_model_killed_in_value_training_resumes_through_iro_run(tmp_path):
    """`iro run` (Prefect) on the embedded model, killed once right after value training's
    first checkpoint, then `iro run` again."""
    store = tmp_path / "store"
    config = {
        "run_name": "kill-value",
        "iterations": 1,
        "data": {
            "dataset": str(REPO / "data" / "docstrings.jsonl"),
            "prompts_per_iteration": 4,
            "eval_prompts": 4,
        },
        "sampling": {"max_new_tokens": 24},
        "value": {
            "num_layers": 2,
            # 4 steps, a checkpoint after each
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 1},
        },
        "eval": {"enabled": False},
        "store": {"root": str(store)},
    }
    path = tmp_path / "embedded.yaml"
    path.write_text(yaml.safe_dump(config))
    checkpoint, pid = kill_at([*child(path), "--cli"], "checkpoint:1", tmp_path, tiny=False)
    assert checkpoint.parent.parent == store / ".work" / "value"
    assert checkpoint.name == "checkpoint-1"

    log = run_to_end(["-m", "iro.app.cli", "run", str(path)], tmp_path, "rerun", tiny=False)

    assert f"value training resumes from {checkpoint}" in log
    value = ArtifactStore(store).find("value", checkpoint.parent.name)
    assert value is not None
    metrics = value.metrics
    assert (metrics["resumed_from_step"], metrics["optimizer_resumed_from_step"]) == (1, 1)
    assert (metrics["steps_run"], metrics["steps"]) == (3, 4)
    assert f"staging left by process {pid}" in log
    assert hidden_leftovers(store) == []
    assert (store / "runs" / "kill-value" / "iteration-1.json").is_file()


def test_value_training_checkpoints_for_resume_and_keeps_user_checkpoint_settings(tmp_path):
    from iro.core.config import ConfigError, parse_config
    from iro.pipeline.value_training import training_arguments

    args = training_arguments(parse_config({}), tmp_path)
    assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 0.25, 1)
    assert not args.save_only_model and not args.ignore_data_skip
    training = {"save_steps": 10, "save_total_limit": 2}
    mine = training_arguments(parse_config({"value": {"training": training}}), tmp_path)
    assert (mine.save_steps, mine.save_total_limit) == (10, 2)
    for key, value in [
        ("save_strategy", "no"),
        ("save_only_model", True),
        ("resume_from_checkpoint", "elsewhere"),
        ("ignore_data_skip", True),
    ]:
        with pytest.raises(ConfigError, match=f"'{key}'.* set by the pipeline .*resume"):
            training_arguments(parse_config({"value": {"training": {key: value}}}), tmp_path)


def test_a_checkpoint_cut_short_by_a_kill_is_not_resumed_from(tmp_path):
    from iro.valuefn.training import resumable_checkpoint

    def checkpoint(step: int, state: str | None) -> Path:
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (path / "trainer_state.json").write_text(state)
        return path

    checkpoint(2, json.dumps({"global_step": 2}))  # superseded
    done = checkpoint(10, json.dumps({"global_step": 10}))
    checkpoint(12, '{"global_step": 12, "log_hist')  # killed while writing its state, the last file
    checkpoint(14, None)  # killed before
    assert resumable_checkpoint(tmp_path) == done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]
    assert resumable_checkpoint(tmp_path / "never-trained") is None
