"""How (prompt, response) text becomes value-model input, shared by training and scoring.

Prompt and response are tokenised separately and concatenated, so the boundary between them is
exact; a response that ended with end-of-sequence gets the EOS token appended, giving the value
of the finished state. The value of response prefix y<t is read at index prompt_len - 1 + t.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncodedPair:
    input_ids: list[int]
    prompt_len: int  # number of prompt tokens kept after left truncation


def encode_pair(tokenizer, prompt: str, response: str, ended: bool, max_length: int) -> EncodedPair:
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    if ended:
        response_ids = [*response_ids, tokenizer.eos_token_id]
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    room = max_length - len(response_ids)
    if room < 1:
        raise ValueError(
            f"a response of {len(response_ids)} tokens leaves no room for the prompt within "
            f"value.max_length = {max_length}"
        )
    prompt_ids = prompt_ids[-room:]  # keep the end of the prompt: it holds the instruction tail
    return EncodedPair(input_ids=prompt_ids + response_ids, prompt_len=len(prompt_ids))
