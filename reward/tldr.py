"""The TL;DR reward models of the paper: a causal-LM trunk, a linear head read at the last
token, and the checkpoint's `bias` subtracted (so the reference summaries score about zero).

Checkpoint layout (as saved by the summarize-from-feedback reproductions the paper uses):
`config.json` with `base_config` (the trunk's config), `hidden_size` and `bias`; safetensors
weights under `lm_backbone.*` and `scalar_head.{weight,bias}`. Loaded without their custom code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iro.reward.base import ModelReward, checked_dtype

if TYPE_CHECKING:
    import torch

TRUNK_PREFIX = "lm_backbone."
HEAD_PREFIX = "scalar_head."


def _local_dir(reference: str) -> Path:
    path = Path(reference)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(reference, allow_patterns=["*.json", "*.safetensors", "*.txt"]))


def _read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"TL;DR reward model {directory}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return state


class TLDRRewardModel(ModelReward):
    name = "tldr_reward_model"

    def __init__(
        self,
        model: str,
        template: str = "{prompt}{response}",
        batch_size: int = 8,
        max_length: int = 1024,
        device: str = "cpu",
        dtype: str = "float32",
    ):
        self.model_ref = model
        self.template = template
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = checked_dtype(self.name, dtype)

    @cached_property
    def _parts(self) -> tuple[torch.nn.Module, torch.nn.Linear, float, object]:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        directory = _local_dir(self.model_ref)
        config = json.loads((directory / "config.json").read_text())
        missing = [k for k in ("base_config", "bias") if k not in config]
        if missing:
            raise ValueError(f"TL;DR reward model {directory}: config.json lacks {missing}")
        base = dict(config["base_config"])
        trunk = AutoModel.from_config(AutoConfig.for_model(base.pop("model_type"), **base))
        state = _read_state_dict(directory)
        trunk.load_state_dict(
            {k[len(TRUNK_PREFIX) :]: v for k, v in state.items() if k.startswith(TRUNK_PREFIX)}
        )
        head = torch.nn.Linear(int(config.get("hidden_size", trunk.config.hidden_size)), 1)
        head.load_state_dict(
            {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
        )
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        for module in (trunk, head):  # float32 and frozen, as hf_classifier's model
            module.requires_grad_(False).to(self.device, torch.float32).eval()
        return trunk, head, float(config["bias"]), tokenizer

    def _score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        trunk, head, bias, tokenizer = self._parts
        texts = [
            self.template.format(prompt=p, response=r)
            for p, r in zip(prompts, responses, strict=True)
        ]
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            hidden = trunk(**batch).last_hidden_state
            last = batch["attention_mask"].sum(dim=1) - 1  # right padding: last real token
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            with torch.autocast(hidden.device.type, enabled=False):  # the head and bias in fp32
                score = head(hidden[rows, last].float()).squeeze(-1) - bias
            scores.append(score.cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)
