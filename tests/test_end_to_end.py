"""The real thing, small: the embedded SmolLM2 model, vLLM, TRL training and Prefect (ephemeral)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from iro.core.store.local import ArtifactStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STAGES = ("rollout", "score", "reweight", "value", "eval")


def tiny_config(tmp_path: Path) -> Path:
    config = {
        "run_name": "e2e",
        "iterations": 2,
        "data": {
            "dataset": str(REPO / "data" / "docstrings.jsonl"),
            "prompts_per_iteration": 4,
            "eval_prompts": 4,
        },
        "sampling": {"max_new_tokens": 24},
        "search": {"beams": 2, "children": 2, "chunk_tokens": 8},
        "value": {
            "num_layers": 2,
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 4},
        },
        "store": {"root": str(tmp_path / "store")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def iro(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "iro.app.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def artifact_counts(store: Path) -> dict[str, int]:
    return {
        s: len([p for p in (store / s).iterdir() if not p.name.startswith(".")]) for s in STAGES
    }


def rollout_value_scores(store_root: Path, *iterations: int) -> list[np.ndarray]:
    """The `value_score` column of each iteration's rollout table, as the run index names it."""
    store = ArtifactStore(store_root)
    columns = []
    for k in iterations:
        summary = json.loads((store_root / "runs" / "e2e" / f"iteration-{k}.json").read_text())
        rollout = store.load(Path(summary["artifacts"]["rollout"]))
        columns.append(rollout.table()["value_score"].to_numpy(dtype=float))
    return columns


def test_run_evaluates_and_a_rerun_reuses_every_stage(tmp_path):
    config = tiny_config(tmp_path)
    first = iro("run", str(config), tmp_path=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "engine vllm" in log  # generation really went through vLLM

    report = json.loads((tmp_path / "store" / "runs" / "e2e" / "evaluation.json").read_text())
    methods = [row["method"] for row in report["evaluation"]]
    assert methods == ["base", "bon-4", "iro-iter1", "iro-iter2"]
    for row in report["evaluation"]:
        assert 0.0 <= row["win_rate"] <= 1.0 and -2.0 < row["mean_reward"] < 1.0
    assert "iro-iter2" in first.stdout and "evaluation table:" in first.stdout
    counts = artifact_counts(tmp_path / "store")
    assert counts == {"rollout": 2, "score": 2, "reweight": 2, "value": 2, "eval": 4}
    iteration2 = json.loads((tmp_path / "store" / "runs" / "e2e" / "iteration-2.json").read_text())
    assert len(iteration2["policy"]["value_models"]) == 2
    assert all(Path(p, "model.safetensors").is_file() for p in iteration2["policy"]["value_models"])
    # iteration 1 sampled pi_base unguided; iteration 2's search was scored by V_1
    first_values, second_values = rollout_value_scores(tmp_path / "store", 1, 2)
    assert len(first_values) and (first_values == 0.0).all()
    assert len(second_values) and np.isfinite(second_values).all()
    assert (second_values != 0.0).any(), second_values

    second = iro("run", str(config), tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "building" not in log and log.count("reusing") >= 10
    assert artifact_counts(tmp_path / "store") == counts
    assert (
        json.loads((tmp_path / "store" / "runs" / "e2e" / "evaluation.json").read_text())[
            "evaluation"
        ]
        == report["evaluation"]
    )


def test_iteration_without_its_predecessor_names_what_is_missing(tmp_path):
    result = iro("iteration", str(tiny_config(tmp_path)), "--iteration", "2", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "iteration 1 of run 'e2e' has not finished" in result.stderr
    assert not (tmp_path / "store" / "rollout").exists()  # nothing was recomputed


def test_unknown_config_key_fails_before_any_work(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("search:\n  beamz: 3\n")
    result = iro("run", str(config), tmp_path=tmp_path)
    assert result.returncode == 2 and "search.beamz: unknown key" in result.stderr


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_vllm_samples_do_not_depend_on_the_rest_of_the_batch(compiled):
    from iro.core.config import PolicyConfig, RunConfig
    from iro.core.engines.base import ContinuationRequest, SamplingSettings
    from iro.core.engines.factory import get_engine
    from iro.pipeline.generation import policy_tokenizer

    engine = get_engine(PolicyConfig(compile=compiled), None, seed=0)
    assert engine.name == "vllm"
    tokenizer = policy_tokenizer(RunConfig())
    prompts = [tokenizer(f"Say something about {w}.").input_ids for w in ("cats", "rivers", "tea")]
    sampling = SamplingSettings(temperature=0.8)
    alone = engine.continue_batch(
        [ContinuationRequest(tuple(prompts[1]), 3, 16, seed=11)], sampling
    )
    batched = engine.continue_batch(
        [ContinuationRequest(tuple(p), 3, 16, seed=10 + i) for i, p in enumerate(prompts)], sampling
    )
    assert alone[0] == batched[1]
    for continuation in batched[0] + batched[2]:
        assert (
            len(continuation.token_ids) <= 16 and engine.eos_token_id not in continuation.token_ids
        )
