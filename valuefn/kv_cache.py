"""KV-cache plumbing for causal models read one token at a time: left-padded batches, cached rows
that grow, shrink and fork, and a response's cached states reused by a longer response.

Shared by the value model (`valuefn.model`), its scorer (`valuefn.scoring`), token-level guidance
(`valuefn.token_guidance`) and residual decoding (`valuefn.residual_decoding`), so that every
one of them reads a left-padded row at the positions it has alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Output = Callable[[object], torch.Tensor]  # a model output -> what the next step reads (per row)


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the left with `pad` (so every row ends at the last column), and mask."""
    tensors = [torch.tensor(list(r), dtype=torch.long) for r in rows]
    pad_rows = torch.nn.utils.rnn.pad_sequence
    ids = pad_rows(tensors, batch_first=True, padding_value=pad, padding_side="left")
    mask = pad_rows([torch.ones_like(t) for t in tensors], batch_first=True, padding_side="left")
    return ids, mask


def cached_forward(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor, kv=None, **kwargs):
    """`module` on `ids` after the tokens in `kv`; `mask` covers cached and new tokens; `kwargs`
    go to the module (a causal LM that only reads its last position: `logits_to_keep=1`).

    Positions count real tokens only (cumsum of the mask), so a left-padded row is read at the
    positions it has alone and its outputs do not depend on the rest of the batch. Inputs move to
    the module's device.
    """
    device = next(module.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
    return module(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=kv,
        use_cache=True,
        **kwargs,
    )


@dataclass
class CachedRows:
    """Left-padded rows of tokens read by a causal model: its KV cache, the attention mask of the
    cached tokens, and `last`, the output at each row's last token that the next step reads (the
    policy's logits; the value trunk's hidden state, which the vocabulary head values a next
    token from)."""

    kv: object
    mask: torch.Tensor  # (rows, cached tokens), 1 for a real token
    last: torch.Tensor  # (rows, ...)

    @classmethod
    def read(
        cls, module: nn.Module, rows: Sequence[Sequence[int]], pad: int, last: Output, **kwargs
    ) -> tuple[CachedRows, object]:
        """Read token rows once (left-padded): the cached rows, and the model output (`kwargs`
        go to the module, as in `cached_forward`)."""
        ids, mask = left_pad(rows, pad)
        out = cached_forward(module, ids, mask, **kwargs)
        return cls(out.past_key_values, mask, last(out)), out

    def advanced(
        self, module: nn.Module, token_ids: torch.Tensor, last: Output, **kwargs
    ) -> CachedRows:
        """Append one token per row; the KV cache grows in place."""
        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = cached_forward(module, token_ids[:, None], mask, self.kv, **kwargs)
        return CachedRows(out.past_key_values, mask, last(out))

    def select(self, rows: torch.Tensor) -> CachedRows:
        """Keep only `rows` (finished responses leave the batch); the KV cache shrinks in place."""
        self.kv.batch_select_indices(rows)
        return CachedRows(self.kv, self.mask[rows], self.last[rows])

    def repeated(self, n: int) -> CachedRows:
        """A copy with each row repeated n times in a row (rows continued by n candidates each)."""
        kv = copy.deepcopy(self.kv)
        kv.batch_repeat_interleave(n)
        return CachedRows(kv, self.mask.repeat_interleave(n, 0), self.last.repeat_interleave(n, 0))


@dataclass
class ResponseKV:
    """One response read after its cached prompt: the trunk's keys and values at each response
    token (per layer, (kv_heads, tokens, head_dim)) and its output there (tokens, hidden).

    A longer response that starts with these tokens reads only its own new tokens on top of them
    (`TokenValueModel.continue_responses`): the states at a token depend only on the tokens
    before it.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    hidden: torch.Tensor

    @classmethod
    def empty(cls, prompt: CachedRows) -> ResponseKV:
        """No response tokens yet: a response read from its prompt's first token on."""
        layers = prompt.kv.layers
        return cls(
            tuple(layer.keys[0, :, :0] for layer in layers),
            tuple(layer.values[0, :, :0] for layer in layers),
            prompt.last[0, None][:0],
        )

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def head(self, tokens: int) -> ResponseKV:
        """The states of the first `tokens` response tokens."""
        return ResponseKV(
            tuple(k[:, :tokens] for k in self.keys),
            tuple(v[:, :tokens] for v in self.values),
            self.hidden[:tokens],
        )

    def followed_by(self, kv, row: int, columns: slice, hidden: torch.Tensor) -> ResponseKV:
        """These states, then row `row`'s `columns` of a batch's cache `kv` and their outputs
        `hidden` (tokens, hidden)."""
        layers = list(zip(self.keys, self.values, kv.layers, strict=True))
        return ResponseKV(
            tuple(torch.cat([k, x.keys[row, :, columns]], 1) for k, _, x in layers),
            tuple(torch.cat([v, x.values[row, :, columns]], 1) for _, v, x in layers),
            torch.cat([self.hidden.to(hidden.dtype), hidden]),
        )

    def nbytes(self) -> int:
        tensors = (*self.keys, *self.values, self.hidden)
        return sum(t.numel() * t.element_size() for t in tensors)


def batch_past(prompts: Sequence[CachedRows], reused: Sequence[ResponseKV], width: int):
    """One cache for a batch of rows: each row's prompt states then its reused response states,
    right-padded to `width` tokens."""
    from transformers import DynamicCache

    rows = list(zip(prompts, reused, strict=True))
    layers = []
    for n in range(len(prompts[0].kv.layers)):
        keys = _padded_pasts([(p.kv.layers[n].keys[0], r.keys[n]) for p, r in rows], width)
        values = _padded_pasts([(p.kv.layers[n].values[0], r.values[n]) for p, r in rows], width)
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers)


def _padded_pasts(rows: Sequence[Sequence[torch.Tensor]], width: int) -> torch.Tensor:
    """A layer's keys (or values) for a batch: each row's pieces (h, tokens, d) one after the
    other, right-padded with zeros to `width` tokens."""
    first = rows[0][0]
    out = first.new_zeros(len(rows), first.shape[0], width, first.shape[2])
    for i, pieces in enumerate(rows):
        start = 0
        for piece in pieces:
            out[i, :, start : start + piece.shape[1]] = piece
            start += piece.shape[1]
    return out
