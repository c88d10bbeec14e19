"""How (prompt, response) text becomes value-model input, shared by training and scoring.

Prompt and response are tokenised separately and concatenated, so the boundary between them is
exact; a response that ended with end-of-sequence gets the EOS token appended, giving the value
of the finished state. The value of response prefix y<t is read at index prompt_len - 1 + t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncodedPair:
    input_ids: list[int]
    prompt_len: int  # number of prompt tokens kept after left truncation


@dataclass(frozen=True)
class EncodedGroup:
    prompt_ids: list[int]  # left-truncated so that it fits with the longest response
    response_ids: list[list[int]]


def encode_group(
    tokenizer, prompt: str, responses: list[str], ended: list[bool], max_length: int
) -> EncodedGroup:
    """A prompt and the responses that continue it; prompt + any one response fits max_length."""
    eos = [tokenizer.eos_token_id]
    response_ids = [
        tokenizer(r, add_special_tokens=False).input_ids + (eos if e else [])
        for r, e in zip(responses, ended, strict=True)
    ]
    longest = max(len(ids) for ids in response_ids)
    room = max_length - longest
    if room < 1:
        raise ValueError(
            f"a response of {longest} tokens leaves no room for the prompt within "
            f"value.max_length = {max_length}"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    # keep the end of the prompt: it holds the instruction tail
    return EncodedGroup(prompt_ids=prompt_ids[-room:], response_ids=response_ids)


def encode_pair(tokenizer, prompt: str, response: str, ended: bool, max_length: int) -> EncodedPair:
    group = encode_group(tokenizer, prompt, [response], [ended], max_length)
    return EncodedPair(group.prompt_ids + group.response_ids[0], len(group.prompt_ids))


def right_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right with `pad`, and their attention mask."""
    tensors = [torch.tensor(r, dtype=torch.long) for r in rows]
    ids = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=pad)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(t) for t in tensors], batch_first=True)
    return ids, mask
