"""Value training with and without packing each prompt's candidates into one row.

    python benchmarks/value_training_speed.py [--prompts 32] [--candidates 4]

Both sides train the demo's value model (4-layer SmolLM2 trunk, bf16 autocast) for one epoch on
the same responses and the same number of optimiser steps: one row per candidate (16 per batch),
or one row per prompt with its candidates packed after it (16 / candidates prompts per batch).
The rows are the corpus's own documents under the demo's prompt template, each with the reference
summaries of `candidates` documents as responses, so lengths are realistic. Writes
benchmarks/results/value_training_speed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from iro.core.config import load_config
from iro.core.data import load_prompts, render_prompts
from iro.core.fsutil import atomic_write_json
from iro.core.models import resolve_model
from iro.valuefn.model import TokenValueModel
from iro.valuefn.targets import value_rows
from iro.valuefn.training import ValueTrainingArguments, train_value_model

RESULTS = Path(__file__).parent / "results" / "value_training_speed.json"


def candidate_table(prompts: int, candidates: int, tokenizer, cfg) -> pd.DataFrame:
    train = load_prompts(cfg.data, cfg.data.train_split).head(prompts + candidates)
    texts = render_prompts(tokenizer, cfg.data, train["prompt"].tolist()[:prompts])
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            {
                "prompt_text": text,
                "response": train["reference"].iloc[p + c],
                "ended": True,
                "reward": float(rng.normal()),
                "prompt_mean_reward": 0.0,
                "weight": 1.0,
            }
            for p, text in enumerate(texts)
            for c in range(candidates)
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=4)
    args = parser.parse_args()
    cfg = load_config("configs/demo.yaml")
    backbone = resolve_model(cfg.value.backbone, cfg.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    table = candidate_table(args.prompts, args.candidates, tokenizer, cfg)
    results = []
    for pack, batch in ((False, 16), (True, max(1, 16 // args.candidates))):
        torch.manual_seed(0)
        model = TokenValueModel.from_causal_lm(backbone, cfg.value.num_layers)
        rows = value_rows(table, "advantage", pack)
        with tempfile.TemporaryDirectory() as work:
            training = ValueTrainingArguments(
                output_dir=work, bf16=True, use_cpu=not torch.cuda.is_available(),
                report_to="none", num_train_epochs=1, per_device_train_batch_size=batch,
                learning_rate=1e-4, disable_tqdm=True, max_length=cfg.value.max_length,
            )  # fmt: skip
            started = time.time()
            metrics = train_value_model(model, tokenizer, rows, training)
            seconds = time.time() - started
        results.append(
            {"pack_candidates": pack, "rows": len(rows), "responses": int(metrics["examples"]),
             "steps": int(metrics["steps"]), "seconds": round(seconds, 1)}
        )  # fmt: skip
        print(json.dumps(results[-1]))
    speedup = results[0]["seconds"] / results[1]["seconds"]
    atomic_write_json(RESULTS, {"runs": results, "speedup": round(speedup, 2), **vars(args)})
    print(f"packing: {speedup:.2f}x faster; {RESULTS}")


if __name__ == "__main__":
    main()
