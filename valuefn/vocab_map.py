"""Carry a residual's delta from its own vocabulary (source) onto a base's (target).

Tokens are matched by the bytes they stand for, so that tokenizers that mark spaces and bytes
differently still meet: byte-level BPE ('Ġthe' -> b' the', 'Ċ' -> b'\\n'), SentencePiece
('▁the' -> b' the', '<0x0A>' -> b'\\n'), and plain strings otherwise (word-level vocabularies).
Where several source tokens stand for the same bytes the lowest id wins. The end-of-sequence,
beginning, padding and unknown tokens are matched by role whatever their spelling, so that a
residual that learnt when to stop still says so on the base's vocabulary.

A target token without a match gets delta = 0: the base's own preference for it stands. That is
the residual's neutral value (`valuefn.residual.residual_delta`: the zero-initialised residual,
held near it by the norm penalty), and it never moves a token on the strength of a different one.
(Giving a token the delta of the first source token of its re-tokenised text would instead boost
every target token that starts with a favoured piece, whatever it goes on to spell.)

Same vocabulary: `map_delta` is the identity and returns its input, no copy. With another
vocabulary the residual reads the text in its own tokenizer; `valuefn.residual_decoding`
re-tokenises the text so far at every step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

ROLES = ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id")
BYTE_LEVEL_DECODER = {char: byte for byte, char in bytes_to_unicode().items()}
SENTENCEPIECE_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level(token: str) -> bytes:
    if all(char in BYTE_LEVEL_DECODER for char in token):
        return bytes(BYTE_LEVEL_DECODER[char] for char in token)
    return token.encode()  # an added token spelt outside the byte alphabet


def _sentencepiece(token: str) -> bytes:
    byte = SENTENCEPIECE_BYTE.match(token)
    return bytes([int(byte[1], 16)]) if byte else token.replace("▁", " ").encode()


def token_bytes(tokenizer) -> Callable[[str], bytes]:
    """How this tokenizer's token strings become the bytes they stand for (from its decoder)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()).get("decoder") if backend is not None else None
    decoder = json.dumps(spec, ensure_ascii=False)
    if "ByteLevel" in decoder:
        return _byte_level
    if "▁" in decoder or "Metaspace" in decoder or "ByteFallback" in decoder:
        return _sentencepiece
    return str.encode


@dataclass(frozen=True)
class VocabularyMap:
    """Target id -> source id (`source_size` where none matches); `index` None: the identity."""

    source_size: int
    target_size: int
    index: torch.Tensor | None
    shared_ids: bool  # every token has the same id on both sides: the residual reads base ids

    @classmethod
    def build(
        cls,
        source_tokenizer,
        target_tokenizer,
        source_size: int | None = None,
        target_size: int | None = None,
    ) -> VocabularyMap:
        """Map the residual's tokenizer (source) onto the base's (target).

        Sizes are the widths of the logits, which may exceed the tokenizers (padded
        embeddings); they default to the tokenizers' lengths.
        """
        source_size = source_size or len(source_tokenizer)
        target_size = target_size or len(target_tokenizer)
        if source_tokenizer.get_vocab() == target_tokenizer.get_vocab():
            if source_size == target_size:
                return cls(source_size, target_size, None, shared_ids=True)
            ids = torch.arange(target_size)
            return cls(source_size, target_size, ids.where(ids < source_size, source_size), True)

        source_key, target_key = token_bytes(source_tokenizer), token_bytes(target_tokenizer)
        by_bytes: dict[bytes, int] = {}
        for token, i in sorted(source_tokenizer.get_vocab().items(), key=lambda item: item[1]):
            if i < source_size:
                by_bytes.setdefault(source_key(token), i)
        index = torch.full((target_size,), source_size, dtype=torch.long)
        for token, i in target_tokenizer.get_vocab().items():
            if i < target_size and (match := by_bytes.get(target_key(token))) is not None:
                index[i] = match
        for role in ROLES:
            source_id = getattr(source_tokenizer, role, None)
            target_id = getattr(target_tokenizer, role, None)
            if source_id is not None and target_id is not None and target_id < target_size:
                index[target_id] = source_id
        return cls(source_size, target_size, index, shared_ids=False)

    @property
    def coverage(self) -> dict[str, float]:
        """How much of each vocabulary the map joins."""
        if self.index is None:
            return {
                "target_mapped": float(self.target_size),
                "target_coverage": 1.0,
                "source_coverage": 1.0,
            }
        mapped = self.index[self.index < self.source_size]
        return {
            "target_mapped": float(len(mapped)),
            "target_coverage": len(mapped) / self.target_size,
            "source_coverage": len(mapped.unique()) / self.source_size,
        }

    def map_delta(self, delta_source: torch.Tensor) -> torch.Tensor:
        """(..., source_size) -> (..., target_size): each target token takes its source token's
        delta, 0 where it has none."""
        if delta_source.shape[-1] != self.source_size:
            raise ValueError(
                f"delta covers {delta_source.shape[-1]} tokens, the map {self.source_size}"
            )
        if self.index is None:
            return delta_source
        zero = delta_source.new_zeros((*delta_source.shape[:-1], 1))
        return torch.cat([delta_source, zero], dim=-1)[..., self.index.to(delta_source.device)]
