"""VAS and IVL as runs of the same pipeline: the IVL residual stage and its evaluation (fast, on
the tiny model), and `iro vas` / `iro ivl` end to end through Prefect (slow)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iro.core.config import ConfigError, parse_config
from iro.pipeline.ivl import RESIDUAL_DIR, demonstrations
from iro.pipeline.runner import Pipeline
from tests.conftest import make_causal_lm
from tests.test_remote_faults import tiny_config

REPO = Path(__file__).resolve().parents[1]
LENGTH = [{"type": "length_penalty", "options": {"target_words": 2, "per_word": 0.1}}]


def ivl_config(tmp: Path, model: Path, **ivl: object) -> dict:
    settings = tiny_config(tmp, model, LENGTH)
    settings["eval"] = {"enabled": True, "baselines": ["base"]}
    settings["ivl"] = {
        "backbone": str(model),
        "num_layers": 1,
        "demonstrations": 8,
        "max_length": 64,
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 4},
        **ivl,
    }
    return settings


def test_the_residual_is_an_artifact_reused_on_the_second_call(tiny_lm, tmp_path, caplog):
    pipeline = Pipeline(parse_config(ivl_config(tmp_path, tiny_lm)))
    residual = pipeline.train_residual()
    assert (residual.file(RESIDUAL_DIR) / "model.safetensors").is_file()
    assert residual.metrics["examples"] == 8
    with caplog.at_level(logging.INFO, logger="iro.pipeline.runner"):
        again = pipeline.train_residual()
    assert again.path == residual.path and "reusing ivl artifact" in caplog.text


def test_ivl_is_evaluated_on_the_held_out_prompts_with_the_runs_reward(tiny_lm, tmp_path):
    pipeline = Pipeline(parse_config(ivl_config(tmp_path, tiny_lm)))
    evaluation = pipeline.evaluate("ivl", [pipeline.train_residual()])
    table = evaluation.table()
    assert len(table) == 2 and table["reward"].notna().all()
    assert (table["num_tokens"] <= 6).all()
    assert evaluation.metrics["samples_per_prompt"] == 1


def test_a_residual_trained_against_one_base_decodes_with_another(tiny_lm, tmp_path):
    """Transfer: trained against `ivl.train_base`, added to `policy.model` at decoding."""
    other = make_causal_lm(tmp_path / "other-base", seed=1)
    settings = ivl_config(tmp_path, tiny_lm, train_base=str(tiny_lm))
    settings["policy"]["model"] = str(other)
    pipeline = Pipeline(parse_config(settings))
    table = pipeline.evaluate("ivl", [pipeline.train_residual()]).table()
    assert len(table) == 2 and table["response"].map(type).eq(str).all()


def test_demonstrations_come_from_the_response_column():
    cfg = parse_config({"data": {"dataset": str(REPO / "data" / "docstrings.jsonl")}})
    picked = demonstrations(
        cfg.model_copy(update={"ivl": cfg.ivl.model_copy(update={"demonstrations": 5})})
    )
    assert len(picked) == 5 and picked["reference"].str.len().gt(0).all()
    no_reference = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"reference_field": None})}
    )
    with pytest.raises(ConfigError, match=r"ivl\.response_field"):
        demonstrations(no_reference)


def test_ivl_is_not_a_baseline():
    with pytest.raises(ConfigError, match="ivl needs its residual"):
        parse_config({"eval": {"baselines": ["base", "ivl"]}})


def _iro(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "iro.app.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("command", "label"), [("vas", "vas-iter1"), ("ivl", "ivl")])
def test_one_command_runs_the_method_and_its_evaluation(tiny_lm, tmp_path, command, label):
    settings = ivl_config(tmp_path, tiny_lm)
    settings["value"]["head"] = "vocabulary"
    settings["value"]["td"] = {"target_updates": 2}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(settings))
    done = _iro(tmp_path, command, str(config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = tmp_path / "store" / "runs" / f"faults-{command}" / "evaluation.json"
    rows = {r["method"]: r for r in json.loads(record.read_text())["evaluation"]}
    assert set(rows) == {"base", label}
    assert 0 <= rows[label]["win_rate"] <= 1
