"""The implicit-reward scorer of weak-to-strong search (CBS): log pi_tuned(y|x) - log pi_untuned(y|x).

A small model pair (say a small chat model and its base) stands in for a value function: the
log-likelihood ratio of the response so far measures how much tuning favours it. Usable wherever a
value model is, as a term of the search score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from iro.valuefn.encoding import encode_pair, right_pad


class ImplicitRewardScorer:
    def __init__(
        self,
        tuned,
        untuned,
        tokenizer,
        beta: float = 1.0,
        max_length: int = 1024,
        batch_size: int = 8,
    ):
        if tuned.config.vocab_size != untuned.config.vocab_size:
            raise ValueError(
                "the tuned and untuned models of an implicit reward must share a vocabulary"
            )
        self.tuned, self.untuned = tuned.eval(), untuned.eval()
        self.tokenizer = tokenizer
        self.beta = beta
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(cls, tuned_path: str, untuned_path: str, **kwargs) -> ImplicitRewardScorer:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return cls(
            AutoModelForCausalLM.from_pretrained(tuned_path, use_safetensors=True),
            AutoModelForCausalLM.from_pretrained(untuned_path, use_safetensors=True),
            AutoTokenizer.from_pretrained(tuned_path),
            **kwargs,
        )

    @staticmethod
    def _response_logprob(
        model, ids: torch.Tensor, mask: torch.Tensor, starts: Sequence[int]
    ) -> torch.Tensor:
        logprobs = torch.log_softmax(
            model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1
        )
        token_logprobs = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
        positions = torch.arange(ids.shape[1] - 1)[None, :]
        # token t+1 is predicted at position t; count response tokens only
        in_response = (positions >= torch.tensor(starts)[:, None] - 1) & mask[:, 1:].bool()
        return (token_logprobs * in_response).sum(dim=1)

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], responses: Sequence[str], ended: Sequence[bool]
    ) -> np.ndarray:
        """(log pi_tuned - log pi_untuned)(response | prompt) / beta for each candidate."""
        out = np.empty(len(responses))
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(responses), self.batch_size):
            rows = range(start, min(start + self.batch_size, len(responses)))
            pairs = [
                encode_pair(self.tokenizer, prompts[i], responses[i], ended[i], self.max_length)
                for i in rows
            ]
            ids, mask = right_pad([p.input_ids for p in pairs], pad)
            starts = [p.prompt_len for p in pairs]
            ratio = self._response_logprob(self.tuned, ids, mask, starts) - self._response_logprob(
                self.untuned, ids, mask, starts
            )
            out[list(rows)] = (ratio / self.beta).numpy()
        return out
