"""Score candidate texts with a sum of value models, sum_i V_i / beta_i.

Each value model reads the text re-tokenised with its own tokenizer, so a value model may use a
different tokenizer from the policy.

Scoring is incremental: a search scores many candidates that continue the same prompt, step after
step, and each step's candidates continue the last step's. So each value model reads a prompt once
and keeps its KV cache, keeps the states of the responses it read in the last call, and reads of
each candidate only the tokens after the longest response of the last call it starts with (the
parent beam, in a search). Inputs longer than `max_length` take the full-pass path, which
truncates the prompt exactly as training does.

A value model trained on a prior (`TokenValueModel.prior`) predicts a residual: its value is the
prior (the run's reward read on the candidate so far) plus the network's output, and a finished
candidate is valued at the prior alone, its reward, without a forward pass. The prior is computed
once per call and shared by all members.

Every forward pass adds the tokens it read to the open cost meters (`iro.core.cost.measure`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from iro.core.cost import count_value_tokens
from iro.valuefn.encoding import encode_pair, right_pad
from iro.valuefn.kv_cache import CachedRows, ResponseKV
from iro.valuefn.model import TokenValueModel

# (prompt texts, response texts) -> the run's reward of each (possibly partial) response
Prior = Callable[[Sequence[str], Sequence[str]], np.ndarray]

PROMPT_CACHE_SIZE = 256  # prompts whose KV cache a value model keeps (a few MB each at most)
# states of the responses one call read, kept for the next call (a search step's candidates:
# ~75 MB for 512 candidates of 48 tokens on the demo's 4-layer value model)
RESPONSE_CACHE_BYTES = 2 << 30


@dataclass
class PromptState:
    ids: list[int]
    cache: CachedRows
    empty_response_value: float


@dataclass
class ReadResponse:
    """A response a value model read: its token ids, its states after the prompt, its value."""

    ids: list[int]
    states: ResponseKV
    value: float


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def closest_read(row: Sequence[int], read: Sequence[ReadResponse]) -> tuple[ReadResponse, int]:
    """The read response sharing the longest prefix with `row`, and that prefix's length."""
    best = max(read, key=lambda r: shared_prefix_length(row, r.ids))
    return best, shared_prefix_length(row, best.ids)


class _Pending(NamedTuple):
    """A row to read: its index in the call, its prompt, the states it continues, its tokens."""

    index: int
    prompt: str
    prompt_cache: CachedRows
    reused: ResponseKV
    row: list[int]


@dataclass
class LoadedValue:
    model: TokenValueModel
    tokenizer: object
    beta: float
    name: str = "value model"
    prompts: OrderedDict[str, PromptState] = field(default_factory=OrderedDict)
    # the responses of the last scoring call, by prompt: the next call's candidates continue them
    responses: dict[str, list[ReadResponse]] = field(default_factory=dict)

    def prompt_state(self, prompt: str) -> PromptState:
        state = self.prompts.get(prompt)
        if state is None:
            ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
            cache, values = self.model.prefill([ids])
            count_value_tokens(len(ids))
            state = PromptState(ids, cache, values.item())
            self.prompts[prompt] = state
            if len(self.prompts) > PROMPT_CACHE_SIZE:
                self.prompts.popitem(last=False)
        self.prompts.move_to_end(prompt)
        return state


def _last_real(values: torch.Tensor, mask: torch.Tensor) -> list[float]:
    return values[torch.arange(values.shape[0]), mask.sum(dim=1) - 1].tolist()


UNREADABLE_FRACTION = 0.5


def _check_readable(member: LoadedValue, rows: Sequence[list[int]]) -> None:
    """Refuse to rank by a value model that sees mostly unknown tokens: its scores mean nothing."""
    unk = member.tokenizer.unk_token_id
    total = sum(len(r) for r in rows)
    if unk is None or total == 0:
        return
    fraction = sum(r.count(unk) for r in rows) / total
    if fraction > UNREADABLE_FRACTION:
        raise ValueError(
            f"value model {member.name} cannot read the candidates: {fraction:.0%} of their tokens "
            "are unknown to its tokenizer"
        )


class ValueEnsemble:
    def __init__(
        self,
        members: Sequence[LoadedValue],
        max_length: int,
        batch_size: int = 16,
        prior: Prior | None = None,
        score_dtype: torch.dtype = torch.float32,
    ):
        self.members = list(members)
        self.max_length = max_length
        self.batch_size = batch_size
        self.prior = prior
        self.score_dtype = score_dtype
        needing = [m.name for m in self.members if m.model.prior is not None]
        if needing and prior is None:
            raise ValueError(
                f"value model {needing[0]} predicts a residual on the reward of the prefix "
                "(value.prior = reward): score it with the run's reward as its prior"
            )

    @classmethod
    def load(
        cls,
        directories: Sequence[Path],
        betas: Sequence[float],
        max_length: int,
        batch_size: int,
        prior: Prior | None = None,
        score_dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> ValueEnsemble:
        """The value models saved in `directories`, on `device` (cpu, cuda, cuda:N)."""
        from transformers import AutoTokenizer

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"value.score_device is {device}, but this machine has no CUDA device: set cpu"
            )
        members = []
        for directory, beta in zip(directories, betas, strict=True):
            model = TokenValueModel.load(directory).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(directory)
            members.append(LoadedValue(model, tokenizer, beta, name=str(directory)))
        return cls(members, max_length, batch_size, prior, score_dtype)

    def with_members(self, members: Sequence[LoadedValue]) -> ValueEnsemble:
        """The same scoring settings and prior over other members (a subset, usually)."""
        return ValueEnsemble(
            members, self.max_length, self.batch_size, self.prior, self.score_dtype
        )

    def precision(self) -> torch.autocast:
        """The autocast every forward pass of the members runs under.

        bf16 is what value.training.bf16 trains in, and scores 1.6x faster where the hardware
        has bf16 (AVX512-BF16, GPUs). The members' cached prompts are kept in this precision, so
        every pass over them must use it.
        """
        device = next(self.members[0].model.parameters()).device.type if self.members else "cpu"
        enabled = self.score_dtype != torch.float32
        return torch.autocast(device, dtype=self.score_dtype, enabled=enabled)

    def __len__(self) -> int:
        return len(self.members)

    def _pad_id(self, member: LoadedValue) -> int:
        return member.tokenizer.pad_token_id or 0

    def _full_pass(
        self, member: LoadedValue, prompt: str, responses: Sequence[str], ended: Sequence[bool]
    ) -> list[float]:
        pairs = [
            encode_pair(member.tokenizer, prompt, r, e, self.max_length)
            for r, e in zip(responses, ended, strict=True)
        ]
        ids, mask = right_pad([p.input_ids for p in pairs], self._pad_id(member))
        count_value_tokens(int(mask.sum()))
        device = next(member.model.parameters()).device
        return _last_real(member.model(ids.to(device), mask.to(device)), mask)

    def _incremental(
        self, member: LoadedValue, rows: Sequence[tuple[int, str, list[int]]]
    ) -> dict[int, float]:
        """Values of (index, prompt, response ids) rows, each read after its cached prompt and
        the longest prefix it shares with a response of the last call; the batches mix prompts.
        """
        values: dict[int, float] = {}
        kept: dict[str, list[ReadResponse]] = {}
        room = RESPONSE_CACHE_BYTES

        def keep(prompt: str, read: ReadResponse) -> None:
            nonlocal room
            room -= read.states.nbytes()
            if room >= 0:
                kept.setdefault(prompt, []).append(read)

        todo: list[_Pending] = []
        for i, prompt, row in rows:
            state = member.prompt_state(prompt)
            if not row:
                values[i] = state.empty_response_value
                continue
            earlier = member.responses.get(prompt)
            reused = ResponseKV.empty(state.cache)
            if earlier:
                read, shared = closest_read(row, earlier)
                if read.ids == row:  # read already (e.g. cut back to its parent by a stop string)
                    values[i] = read.value
                    keep(prompt, read)
                    continue
                reused = read.states.head(min(shared, len(row) - 1))
            todo.append(_Pending(i, prompt, state.cache, reused, row))
        # batch rows of similar length: a batch's past is padded to its longest row's
        todo.sort(key=lambda t: t.prompt_cache.mask.shape[1] + len(t.reused))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            new_ids = [t.row[len(t.reused) :] for t in batch]
            batch_values, states = member.model.continue_responses(
                [t.prompt_cache for t in batch],
                [t.reused for t in batch],
                new_ids,
                self._pad_id(member),
            )
            count_value_tokens(sum(map(len, new_ids)))
            for t, value, read in zip(batch, batch_values, states, strict=True):
                values[t.index] = value
                keep(t.prompt, ReadResponse(t.row, read, value))
        member.responses = kept
        return values

    @torch.no_grad()
    def _values(
        self,
        member: LoadedValue,
        prompts: Sequence[str],
        responses: Sequence[str],
        ended: Sequence[bool],
    ) -> np.ndarray:
        values = np.empty(len(responses))
        by_prompt: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_prompt.setdefault(prompt, []).append(i)
        eos = [member.tokenizer.eos_token_id]
        incremental = []
        for prompt, indices in by_prompt.items():
            rows = [
                member.tokenizer(responses[i], add_special_tokens=False).input_ids
                + (eos if ended[i] else [])
                for i in indices
            ]
            _check_readable(member, rows)
            cached = member.prompts.get(prompt)  # a search scores the same prompt every step
            prompt_len = len(
                cached.ids
                if cached
                else member.tokenizer(prompt, add_special_tokens=False).input_ids
            )
            if prompt_len + max(len(r) for r in rows) <= self.max_length:
                incremental += [(i, prompt, row) for i, row in zip(indices, rows, strict=True)]
            else:  # too long: truncate the prompt as training does
                responses_here = [responses[i] for i in indices]
                ended_here = [ended[i] for i in indices]
                values[indices] = self._full_pass(member, prompt, responses_here, ended_here)
        for i, value in self._incremental(member, incremental).items():
            values[i] = value
        return values

    def member_values(
        self, prompts: Sequence[str], responses: Sequence[str], ended: Sequence[bool]
    ) -> list[np.ndarray]:
        """V_i(prompt, response) of each member, in member order (prior included)."""
        prior = None
        if any(m.model.prior is not None for m in self.members):
            prior = np.asarray(self.prior(prompts, responses), dtype=np.float64)
        done = np.asarray(ended, dtype=bool)
        values = []
        for member in self.members:
            if member.model.prior is None:
                with self.precision():
                    values.append(self._values(member, prompts, responses, ended))
                continue
            # a finished response's value is its reward: the network reads only unfinished ones
            own = prior.copy()
            open_rows = np.flatnonzero(~done)
            if not open_rows.size:
                member.responses = {}  # nothing continues: drop the last call's states
            else:
                with self.precision():
                    own[open_rows] += self._values(
                        member,
                        [prompts[i] for i in open_rows],
                        [responses[i] for i in open_rows],
                        [False] * open_rows.size,
                    )
            values.append(own)
        return values

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], ended: Sequence[bool]
    ) -> np.ndarray:
        """sum_i V_i(prompt, response) / beta_i for each candidate."""
        return self.combine(self.member_values(prompts, responses, ended))

    def combine(self, member_values: Sequence[np.ndarray]) -> np.ndarray:
        """The guidance score sum_i V_i / beta_i, given each member's values (in member order).

        The one place the sum is formed: chunk search and token-level guidance both call it.
        """
        if len(member_values) != len(self.members) or not member_values:
            raise ValueError(f"{len(member_values)} value arrays for {len(self.members)} models")
        total = np.zeros(len(member_values[0]))
        for member, values in zip(self.members, member_values, strict=True):
            total += np.asarray(values, dtype=np.float64) / member.beta
        return total
