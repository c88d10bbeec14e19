"""Token-level guided decoding: VAS-style value guidance and ARGS, on a transformers policy.

At every step the policy's top-k next tokens are re-scored and one is drawn from

    p(a)  ∝  exp( logit(a) / temperature + shift(a) ),   a in top-k

- value guidance (VAS / controlled decoding): shift(a) = beta * (V(s∘a) - mean_topk V(s∘a)),
  with V = sum_i V_i / beta_i over the value models; beta = 0 gives back the base distribution;
- ARGS: shift(a) = w * r(x, y∘a), the reward of the text with the token appended (ARGS-greedy
  takes the argmax).

Prompts are decoded as a batch: left-padded rows with positions counted over real tokens, a
generator per prompt, and finished rows leaving the batch, so a prompt's output does not depend
on the rest of its batch. The policy and the value models keep KV caches, so each step reads one
new token per row, and the policy computes logits at each row's last position only. A vocabulary value head values every candidate from the state it already
holds (one value forward per step for the whole batch, to advance it); a scalar head reads the
k candidates of every row as one batch of rows * k one-token extensions.

On CPU, decoding runs with `TokenGuidanceSettings.threads` torch intra-op threads (default 1):
a step is a few rows of one token each, too little work per operation for a second thread to
pay, and on shared cores (other jobs running) every parallelised operation waits for a thread
the scheduler has parked: measured on 2 cores under load, a step of 8 rows on SmolLM2-135M took
~4 s with torch's default 2 threads and ~0.1 s with 1 (`transformers` `generate` is just as
slow at 2). The thread count is fixed rather than chosen by load, since it changes float
rounding and so could change a draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from iro.reward.base import Reward
from iro.valuefn.kv_cache import CachedRows
from iro.valuefn.scoring import ValueEnsemble


@dataclass(frozen=True)
class TokenGuidanceSettings:
    top_k: int = 10
    max_new_tokens: int = 48
    temperature: float = 1.0
    greedy: bool = False
    threads: int | None = 1  # torch intra-op threads while decoding on CPU; None: torch's own

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"token guidance needs threads >= 1 (or None), got {self.threads}")
        if self.top_k < 1:
            raise ValueError(f"token guidance needs top_k >= 1, got {self.top_k}")
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("token guidance samples: temperature must be > 0 (or set greedy)")


@dataclass(frozen=True)
class GuidedPrompt:
    ids: list[int]  # the rendered prompt in the policy's tokens
    raw: str  # the prompt as the reward reads it
    text: str  # the rendered prompt, as the value models read it
    seed: int  # its own generator: its output does not depend on its batch


class TokenScorer(Protocol):
    """Scores the candidate next tokens of a batch of growing responses, one row per prompt."""

    def start(self, prompts: Sequence[GuidedPrompt]) -> None: ...

    def shifts(self, responses: Sequence[Sequence[int]], candidates: torch.Tensor) -> torch.Tensor:
        """Candidates (rows, k) -> logit shifts (rows, k)."""
        ...

    def advance(self, keep: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Keep only rows `keep` and append one token (len(keep),) to each."""
        ...


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
        self._caches: list[CachedRows] = []

    def start(self, prompts: Sequence[GuidedPrompt]) -> None:
        self._caches = []
        for member in self.values.members:
            rows = [member.tokenizer(p.text, add_special_tokens=False).input_ids for p in prompts]
            with self.values.precision():
                cache, _ = member.model.prefill(rows, member.tokenizer.pad_token_id or 0)
            self._caches.append(cache)

    @torch.no_grad()
    def shifts(self, responses: Sequence[Sequence[int]], candidates: torch.Tensor) -> torch.Tensor:
        with self.values.precision():
            member_values = [
                member.model.candidate_values(cache, candidates).flatten().float().numpy()
                for member, cache in zip(self.values.members, self._caches, strict=True)
            ]
        total = torch.from_numpy(self.values.combine(member_values)).view(candidates.shape)
        return self.beta * (total - total.mean(dim=1, keepdim=True))

    @torch.no_grad()
    def advance(self, keep: torch.Tensor, token_ids: torch.Tensor) -> None:
        with self.values.precision():
            self._caches = [
                m.model.advance(cache.select(keep), token_ids)
                for m, cache in zip(self.values.members, self._caches, strict=True)
            ]


class RewardShift:
    """ARGS: w * reward(prompt, response so far + candidate token), one reward batch per step."""

    def __init__(self, reward: Reward, weight: float, policy_tokenizer):
        self.reward = reward
        self.weight = weight
        self.tokenizer = policy_tokenizer
        self._raw_prompts: list[str] = []

    def start(self, prompts: Sequence[GuidedPrompt]) -> None:
        self._raw_prompts = [p.raw for p in prompts]

    def shifts(self, responses: Sequence[Sequence[int]], candidates: torch.Tensor) -> torch.Tensor:
        rows = candidates.tolist()
        texts = [
            self.tokenizer.decode([*response, c], skip_special_tokens=True)
            for response, row in zip(responses, rows, strict=True)
            for c in row
        ]
        prompts = [raw for raw, row in zip(self._raw_prompts, rows, strict=True) for _ in row]
        rewards = torch.as_tensor(self.reward.score(prompts, texts), dtype=torch.float64)
        return self.weight * rewards.view(candidates.shape)

    def advance(self, keep: torch.Tensor, token_ids: torch.Tensor) -> None:
        self._raw_prompts = [self._raw_prompts[i] for i in keep.tolist()]


def step_distribution(
    logits: torch.Tensor,
    responses: Sequence[Sequence[int]],
    scorer: TokenScorer | None,
    top_k: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate token ids, their probabilities), each (rows, k), for one guided step."""
    top = torch.topk(logits.float(), min(top_k, logits.shape[-1]), dim=-1)
    scores = top.values / temperature
    if scorer is not None:
        scores = scores + scorer.shifts(responses, top.indices).to(scores.dtype)
    return top.indices, torch.softmax(scores, dim=-1)


def _choose(
    probs: torch.Tensor, generators: Sequence[torch.Generator], greedy: bool
) -> torch.Tensor:
    """One candidate index per row, each row drawn with its own prompt's generator."""
    if greedy:
        return probs.argmax(dim=-1)
    draws = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
    return torch.cat(draws)


def _logits(out) -> torch.Tensor:
    return out.logits[:, -1]


@contextmanager
def decoding_threads(model, threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the block when `model` runs on CPU
    (None, or a model on an accelerator: left as it is), then restored."""
    previous = torch.get_num_threads()
    on_cpu = next(model.parameters()).device.type == "cpu"
    change = threads is not None and threads != previous and on_cpu
    if change:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


@torch.no_grad()
def decode_batch(
    model,
    eos_token_id: int,
    prompts: Sequence[GuidedPrompt],
    scorer: TokenScorer | None,
    settings: TokenGuidanceSettings,
) -> list[tuple[list[int], bool]]:
    """Decode prompts together; per prompt (response token ids without EOS, ended with EOS)."""
    with decoding_threads(model, settings.threads):
        ids = [p.ids for p in prompts]
        policy, _ = CachedRows.read(model, ids, eos_token_id, _logits, logits_to_keep=1)
        if scorer is not None:
            scorer.start(prompts)
        generators = [torch.Generator().manual_seed(p.seed) for p in prompts]
        responses: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        active = list(range(len(prompts)))  # the prompt of each row still decoding
        temperature = max(settings.temperature, 1e-6)
        for step in range(settings.max_new_tokens):
            rows = [responses[i] for i in active]
            tokens, probs = step_distribution(
                policy.last, rows, scorer, settings.top_k, temperature
            )
            choice = _choose(probs, [generators[i] for i in active], settings.greedy)
            chosen = tokens.gather(1, choice[:, None])[:, 0]
            going = chosen != eos_token_id
            for i, token, goes in zip(active, chosen.tolist(), going.tolist(), strict=True):
                if goes:
                    responses[i].append(token)
                else:
                    ended[i] = True
            keep = going.nonzero()[:, 0]
            active = [active[j] for j in keep.tolist()]
            if not active or step + 1 == settings.max_new_tokens:
                break
            policy = policy.select(keep).advanced(model, chosen[keep], _logits, logits_to_keep=1)
            if scorer is not None:
                scorer.advance(keep, chosen[keep])
        return list(zip(responses, ended, strict=True))


def decode(
    model,
    eos_token_id: int,
    prompts: Sequence[GuidedPrompt],
    scorer: TokenScorer | None,
    settings: TokenGuidanceSettings,
    batch_size: int = 16,
) -> list[tuple[list[int], bool]]:
    """`decode_batch` over batches of `batch_size` prompts (the outputs do not depend on it)."""
    return [
        result
        for start in range(0, len(prompts), batch_size)
        for result in decode_batch(
            model, eos_token_id, prompts[start : start + batch_size], scorer, settings
        )
    ]
