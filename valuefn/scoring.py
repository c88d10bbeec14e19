"""Score candidate texts with a sum of value models, sum_i V_i / beta_i.

Each value model reads the text re-tokenised with its own tokenizer, so a value model may use a
different tokenizer from the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from valuefn.encoding import encode_pair
from valuefn.model import TokenValueModel


@dataclass
class LoadedValue:
    model: TokenValueModel
    tokenizer: object
    beta: float


class ValueEnsemble:
    def __init__(self, members: Sequence[LoadedValue], max_length: int, batch_size: int = 16):
        self.members = list(members)
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, directories: Sequence[Path], betas: Sequence[float], max_length: int, batch_size: int
    ) -> ValueEnsemble:
        from transformers import AutoTokenizer

        members = []
        for directory, beta in zip(directories, betas, strict=True):
            model = TokenValueModel.load(directory).eval()
            members.append(LoadedValue(model, AutoTokenizer.from_pretrained(directory), beta))
        return cls(members, max_length, batch_size)

    def __len__(self) -> int:
        return len(self.members)

    @torch.no_grad()
    def _values(
        self,
        member: LoadedValue,
        prompts: Sequence[str],
        responses: Sequence[str],
        ended: Sequence[bool],
    ) -> np.ndarray:
        pairs = [
            encode_pair(member.tokenizer, p, r, e, self.max_length)
            for p, r, e in zip(prompts, responses, ended, strict=True)
        ]
        # sort by length so each padded batch wastes little work; restore order at the end
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].input_ids))
        values = np.empty(len(pairs))
        pad = member.tokenizer.pad_token_id or 0
        for start in range(0, len(order), self.batch_size):
            batch = [pairs[i] for i in order[start : start + self.batch_size]]
            width = max(len(p.input_ids) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, pair in enumerate(batch):
                ids[row, : len(pair.input_ids)] = torch.tensor(pair.input_ids)
                mask[row, : len(pair.input_ids)] = 1
            out = member.model(ids, mask)
            last = mask.sum(dim=1) - 1
            batch_values = out[torch.arange(len(batch)), last].tolist()
            for i, value in zip(order[start : start + self.batch_size], batch_values, strict=True):
                values[i] = value
        return values

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], ended: Sequence[bool]
    ) -> np.ndarray:
        """sum_i V_i(prompt, response) / beta_i for each candidate."""
        total = np.zeros(len(responses))
        for member in self.members:
            total += self._values(member, prompts, responses, ended) / member.beta
        return total
