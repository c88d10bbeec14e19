"""Token-level guided decoding: VAS-style value guidance and ARGS, on a transformers policy.

At every step the policy's top-k next tokens are re-scored and one is drawn from

    p(a)  ∝  exp( logit(a) / temperature + shift(a) ),   a in top-k

- value guidance (VAS / controlled decoding): shift(a) = beta * (V(s∘a) - mean_topk V(s∘a)),
  with V = sum_i V_i / beta_i over the value models; beta = 0 gives back the base distribution;
- ARGS: shift(a) = w * r(x, y∘a), the reward of the text with the token appended (ARGS-greedy
  takes the argmax).

Both the policy and the value models keep a KV cache, so each step reads one new token instead of
the whole prefix; the k candidates of a step are scored as one batch. Prompts are decoded one
after another.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from reward.base import Reward
from valuefn.scoring import ValueEnsemble


@dataclass(frozen=True)
class TokenGuidanceSettings:
    top_k: int = 10
    max_new_tokens: int = 48
    temperature: float = 1.0
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"token guidance needs top_k >= 1, got {self.top_k}")
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("token guidance samples: temperature must be > 0 (or set greedy)")


class TokenScorer(Protocol):
    """Scores candidate next tokens of one prompt's growing response."""

    def start(self, raw_prompt: str, prompt_text: str) -> None: ...

    def shifts(self, response_ids: Sequence[int], candidates: Sequence[int]) -> np.ndarray: ...

    def advance(self, token_id: int) -> None: ...


class ValueShift:
    """beta * (V(s∘a) - mean over the candidates), V read incrementally from each value model."""

    def __init__(self, values: ValueEnsemble, beta: float, policy_tokenizer):
        for member in values.members:
            if member.model.prior is not None:
                raise ValueError(
                    f"value model {member.name} is a residual on the reward of the prefix "
                    "(value.prior = reward), which token-level guidance does not read; use it "
                    "with chunk-level search (iro), or train with value.prior: none"
                )
            if member.tokenizer.get_vocab() != policy_tokenizer.get_vocab():
                raise ValueError(
                    "token-level value guidance needs value models that share the policy's "
                    "tokenizer; use chunk-level search for a value model with its own tokenizer"
                )
        self.values = values
        self.beta = beta
        self._caches: list = []

    def start(self, raw_prompt: str, prompt_text: str) -> None:
        # a private copy of each member's prompt cache, advanced token by token
        self._caches = [
            copy.deepcopy(m.prompt_state(prompt_text).cache) for m in self.values.members
        ]

    @torch.no_grad()
    def shifts(self, response_ids: Sequence[int], candidates: Sequence[int]) -> np.ndarray:
        ids = torch.tensor([[c] for c in candidates])
        mask = torch.ones_like(ids)
        member_values = [
            member.model.extend(cache, cache.get_seq_length(), ids, mask)[:, 0].numpy()
            for member, cache in zip(self.values.members, self._caches, strict=True)
        ]
        total = self.values.combine(member_values)
        return self.beta * (total - total.mean())

    @torch.no_grad()
    def advance(self, token_id: int) -> None:
        self._caches = [
            m.model.advance(cache, token_id)
            for m, cache in zip(self.values.members, self._caches, strict=True)
        ]


class RewardShift:
    """ARGS: w * reward(prompt, response so far + candidate token), one reward batch per step."""

    def __init__(self, reward: Reward, weight: float, policy_tokenizer):
        self.reward = reward
        self.weight = weight
        self.tokenizer = policy_tokenizer
        self._raw_prompt = ""

    def start(self, raw_prompt: str, prompt_text: str) -> None:
        self._raw_prompt = raw_prompt

    def shifts(self, response_ids: Sequence[int], candidates: Sequence[int]) -> np.ndarray:
        texts = [
            self.tokenizer.decode([*response_ids, c], skip_special_tokens=True) for c in candidates
        ]
        return self.weight * self.reward.score([self._raw_prompt] * len(texts), texts)

    def advance(self, token_id: int) -> None:
        pass


def step_distribution(
    logits: torch.Tensor,
    response: Sequence[int],
    scorer: TokenScorer | None,
    top_k: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate token ids, their probabilities) for one guided step."""
    top = torch.topk(logits.float(), min(top_k, logits.shape[-1]))
    scores = top.values / temperature
    if scorer is not None:
        scores = scores + torch.as_tensor(
            scorer.shifts(response, top.indices.tolist()), dtype=scores.dtype
        )
    return top.indices, torch.softmax(scores, dim=-1)


@torch.no_grad()
def decode_one(
    model,
    eos_token_id: int,
    prompt_ids: Sequence[int],
    raw_prompt: str,
    prompt_text: str,
    scorer: TokenScorer | None,
    settings: TokenGuidanceSettings,
    seed: int,
) -> tuple[list[int], bool]:
    """Decode one prompt; returns (response token ids without EOS, ended with EOS)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([list(prompt_ids)])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    cache, logits = out.past_key_values, out.logits[0, -1]
    if scorer is not None:
        scorer.start(raw_prompt, prompt_text)
    response: list[int] = []
    for _ in range(settings.max_new_tokens):
        temperature = max(settings.temperature, 1e-6)
        tokens, probs = step_distribution(logits, response, scorer, settings.top_k, temperature)
        if settings.greedy:
            choice = int(torch.argmax(probs))
        else:
            choice = int(torch.multinomial(probs, 1, generator=generator))
        token = int(tokens[choice])
        if token == eos_token_id:
            return response, True
        response.append(token)
        if scorer is not None:
            scorer.advance(token)
        step = torch.tensor([[token]])
        mask = torch.ones((1, len(prompt_ids) + len(response)), dtype=torch.long)
        out = model(input_ids=step, attention_mask=mask, past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[0, -1]
    return response, False
