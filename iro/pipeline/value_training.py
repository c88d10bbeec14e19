"""Train V_k on a reweighted table: the pipeline's side of `valuefn.training`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from iro.base.config import RunConfig
from iro.base.models import resolve_model
from valuefn.training import ValueExample, ValueTrainingArguments, train_value_model


def value_examples(table: pd.DataFrame) -> list[ValueExample]:
    return [
        ValueExample(
            prompt=row.prompt_text,
            response=row.response,
            ended=bool(row.ended),
            reward=float(row.reward),
            weight=float(row.weight),
        )
        for row in table.itertuples()
    ]


def train_value(
    cfg: RunConfig, table: pd.DataFrame, init_dir: Path | None, out_dir: Path, work_dir: Path
) -> dict[str, float]:
    """Train V_k on the reweighted table (from V_{k-1} when given) and save it to `out_dir`."""
    from transformers import AutoTokenizer

    from valuefn.model import TokenValueModel

    v = cfg.value
    torch.manual_seed(cfg.seed)
    if init_dir is not None:
        model = TokenValueModel.load(init_dir)
        tokenizer = AutoTokenizer.from_pretrained(init_dir)
    else:
        backbone = resolve_model(v.backbone, cfg.cache_dir)
        model = TokenValueModel.from_causal_lm(backbone, v.num_layers, cfg.policy.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
    args = ValueTrainingArguments(
        output_dir=str(work_dir),
        learning_rate=v.learning_rate,
        adam_epsilon=v.adam_epsilon,
        lr_scheduler_type=v.lr_scheduler,
        warmup_steps=0,
        num_train_epochs=v.epochs,
        per_device_train_batch_size=v.batch_size,
        gradient_accumulation_steps=v.gradient_accumulation_steps,
        max_length=v.max_length,
        logging_steps=5,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    metrics = train_value_model(model, tokenizer, value_examples(table), args)
    model.save(out_dir, tokenizer)
    return metrics
