"""Inverse Value Learning in the pipeline: demonstrations from the run's data, the residual
trained against the frozen base (`valuefn.residual_training`), and decoding with it.

The residual is trained against `ivl.train_base` (default: the policy) and always decodes with
`policy.model`: when the two differ, that is IVL's transfer. A base with the residual's own
tokenizer reads its output directly; one with another vocabulary through a map by token string
(`valuefn.vocab_map`), the residual reading the text in its own tokens.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch

from iro.core.config import ConfigError, RunConfig
from iro.core.data import iteration_slice, load_prompts, render_prompts
from iro.core.errors import out_of_memory
from iro.core.models import resolve_model
from iro.pipeline.trainer_args import pipeline_fixed, trainer_kwargs
from iro.valuefn.residual import ResidualValueNetwork
from iro.valuefn.residual_decoding import decode_with_residual
from iro.valuefn.residual_training import ResidualTrainingArguments, train_residual
from iro.valuefn.token_guidance import TokenGuidanceSettings
from iro.valuefn.vocab_map import VocabularyMap

log = logging.getLogger(__name__)

RESIDUAL_DIR = "residual_model"


def demonstrations(cfg: RunConfig) -> pd.DataFrame:
    """`ivl.demonstrations` training prompts with their demonstration (columns id, prompt,
    reference): the front of the order iteration 1 takes its prompts from."""
    field = cfg.ivl.response_field or cfg.data.reference_field
    if field is None:
        raise ConfigError(
            "IVL learns from demonstrations: set ivl.response_field (or data.reference_field) "
            "to the dataset's response column"
        )
    data = cfg.data.model_copy(update={"reference_field": field})
    train = load_prompts(data, data.train_split)
    return iteration_slice(train, 1, cfg.ivl.demonstrations, cfg.seed)


def training_kwargs(cfg: RunConfig, output_dir: Path) -> dict[str, Any]:
    """`ivl.training` as given, plus what the pipeline fixes (paths, seed, device, logging)."""
    fixed = pipeline_fixed(output_dir, cfg.ivl.max_length, cfg.seed)
    given = cfg.ivl.training.model_dump()
    return trainer_kwargs("ivl.training", given, ResidualTrainingArguments, "SFTConfig", fixed)


def training_arguments(cfg: RunConfig, output_dir: Path) -> ResidualTrainingArguments:
    return ResidualTrainingArguments(**training_kwargs(cfg, output_dir))


def train(cfg: RunConfig, out_dir: Path) -> dict[str, float]:
    """Train the residual on the demonstrations against the frozen training base; save it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    v = cfg.ivl
    trust = cfg.policy.trust_remote_code
    torch.manual_seed(cfg.seed)
    backbone = resolve_model(v.backbone, cfg.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(backbone, trust_remote_code=trust)
    residual = ResidualValueNetwork.from_causal_lm(backbone, v.num_layers, v.connection, trust)
    base = AutoModelForCausalLM.from_pretrained(
        resolve_model(v.train_base or cfg.policy.model, cfg.cache_dir),
        dtype=torch.float32,
        trust_remote_code=trust,
        use_safetensors=True,  # never unpickle weights
    ).eval()
    frame = demonstrations(cfg)
    rows = datasets.Dataset.from_dict(
        {
            "prompt_text": render_prompts(tokenizer, cfg.data, frame["prompt"].tolist()),
            "response": frame["reference"].tolist(),
        }
    )
    knobs = {
        "ivl.training.per_device_train_batch_size": (
            v.training.per_device_train_batch_size,
            "lower it (the base's logits over the whole vocabulary are kept per token)",
        ),
        "ivl.max_length": (v.max_length, "shorter demonstrations"),
    }
    with tempfile.TemporaryDirectory(prefix="iro-ivl-") as work, out_of_memory("ivl", knobs):
        metrics = train_residual(
            residual, base, tokenizer, rows, training_arguments(cfg, Path(work)), v.norm_penalty
        )
    residual.save(out_dir, tokenizer)
    return metrics


def decode(
    base_model, base_tokenizer, residual_dir: Path, prompt_texts: Sequence[str], cfg: RunConfig,
    seeds: Sequence[int],
) -> list[tuple[list[int], bool]]:  # fmt: skip
    """Per prompt (response ids in the base's tokens, ended with EOS): the base plus the
    residual, sampled with the run's temperature and top-k (`decode.greedy`: argmax)."""
    from transformers import AutoTokenizer

    residual = ResidualValueNetwork.load(residual_dir).eval()
    residual_tokenizer = AutoTokenizer.from_pretrained(residual_dir)
    vocab_map = VocabularyMap.build(  # the identity for the residual's own tokenizer
        residual_tokenizer,
        base_tokenizer,
        residual.vocab_size,
        base_model.get_output_embeddings().weight.shape[0],
    )
    if not vocab_map.shared_ids:
        log.info("IVL transfer to another vocabulary: %s", vocab_map.coverage)
    s = cfg.sampling
    settings = TokenGuidanceSettings(
        top_k=s.top_k if s.top_k > 0 else base_tokenizer.vocab_size,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        greedy=cfg.decode.greedy or s.temperature == 0,
    )
    return decode_with_residual(
        base_model, base_tokenizer, residual, residual_tokenizer, prompt_texts, settings,
        seeds, vocab_map,
    )  # fmt: skip
