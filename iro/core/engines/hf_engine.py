"""transformers back end: always available, the fallback when vLLM is not installed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from iro.core.cost import count_sampling
from iro.core.engines.base import Continuation, ContinuationRequest, Engine, SamplingSettings


def continuation(sample: list[int], eos_token_id: int) -> Continuation:
    """A generated row up to its end-of-sequence token, which is dropped (`ended` says it came);
    after it, generate only pads."""
    ended = eos_token_id in sample
    ids = sample[: sample.index(eos_token_id)] if ended else sample
    return Continuation(token_ids=tuple(ids), ended=ended)


class HFEngine(Engine):
    name = "hf"

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str,
        trust_remote_code: bool,
        batch_size: int = 16,
        model=None,
        tokenizer=None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=trust_remote_code
        )
        self.model = model or AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,  # never unpickle weights
        )
        self.model.eval()
        self.batch_size = batch_size
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id

    @torch.no_grad()
    def _generate(
        self,
        group: Sequence[ContinuationRequest],
        n: int,
        max_tokens: int,
        sampling: SamplingSettings,
    ) -> list[list[Continuation]]:
        # left padding: every prompt ends at the same column, where generation starts
        prefixes = [torch.tensor(r.prefix_ids, dtype=torch.long) for r in group]
        input_ids = pad_sequence(
            prefixes, batch_first=True, padding_value=self.pad_token_id, padding_side="left"
        )
        attention = pad_sequence(
            [torch.ones_like(p) for p in prefixes], batch_first=True, padding_side="left"
        )
        width = input_ids.shape[1]
        torch.manual_seed(group[0].seed)
        greedy = sampling.temperature == 0
        generated = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy or sampling.top_k < 1 else sampling.top_k,
            num_return_sequences=n,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
        )[:, width:]
        results = [
            [
                continuation(sample, self.eos_token_id)
                for sample in generated[row * n : (row + 1) * n].tolist()
            ]
            for row in range(len(group))
        ]
        count_sampling([len(r.prefix_ids) for r in group], results)
        return results

    def continue_batch(
        self, requests: Sequence[ContinuationRequest], sampling: SamplingSettings
    ) -> list[list[Continuation]]:
        results: list[list[Continuation] | None] = [None] * len(requests)
        # generate() takes one n and one max_tokens per call: group requests that share them.
        groups: dict[tuple[int, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.n, request.max_tokens), []).append(index)
        for (n, max_tokens), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = self._generate([requests[i] for i in chunk], n, max_tokens, sampling)
                for index, continuations in zip(chunk, batch, strict=True):
                    results[index] = continuations
        return [r for r in results if r is not None]
