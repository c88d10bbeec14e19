"""Decoding with an IVL residual on transformers: log pi = `guided_log_probs(base, r)` per step.

Prompts are decoded as one batch, left-padded, each with its own generator (seeded per prompt),
so a prompt's output does not depend on the batch around it (up to float rounding, which differs
between batch shapes and could flip a draw that lands on a boundary). Each step draws from the
top_k tokens of log pi / temperature (greedy: the argmax of log pi).

How the residual reads the text:
- same token ids as the base (no `vocab_map`, or one with `shared_ids`): it reads the base's
  tokens, with its own KV cache, one new token per step;
- another vocabulary: at every step the text so far is re-tokenised with the residual's
  tokenizer, the prompt and the response apart as in training (`valuefn.encoding`), and read
  whole (no cache: a new base token can change how the residual's tokenizer splits the last
  word); its r at the last token is carried onto the base's vocabulary by the `VocabularyMap`.
  Quadratic in the response length, which is short here.

vLLM (0.32, the installed build) does not fit: it has no per-request logits-processor callables
in `SamplingParams` any more (V0's `logits_processors` field is gone; `extra_args` is free-form
data only). Custom processors are engine-level classes, given by type or "module:Class" name to
`LLM(logits_processors=[...])` and built inside the engine's worker with only the vLLM config
(`vllm/v1/sample/logits_processor/interface.py`: `LogitsProcessor.__init__(vllm_config,
device, is_pin_memory)`, `update_state(BatchUpdate)` with each added request's
(index, params, prompt ids, live output ids), `apply(logits)` on the whole (batch, vocab) row
block before penalties and temperature when not argmax-invariant; the V2 model runner's
`vllm/v1/worker/gpu/sample/logits_processor/interface.py` likewise, per recycled slot). So a
processor may hold a second model and its own state: it would load the residual in the worker
from a path passed out of band, run it synchronously inside every sampler step on each
request's prompt + output ids, without vLLM's paged KV cache (its own per-request caches would
have to follow the batch's add / remove / move / swap bookkeeping, and async scheduling leaves
placeholder ids in the output lists until they are filled), and it sees only token ids, not text,
so another vocabulary needs a tokenizer round trip per request per step. That is not small, and
it would put a model inside vLLM's sampler, so it is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from iro.valuefn.kv_cache import left_pad as pad_left
from iro.valuefn.residual import ResidualValueNetwork, guided_log_probs
from iro.valuefn.token_guidance import TokenGuidanceSettings, decoding_threads
from iro.valuefn.vocab_map import VocabularyMap


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, ...]:
    """Token ids padded on the left, their attention mask and position ids (0 at each start)."""
    if any(len(r) == 0 for r in rows):
        raise ValueError("an empty prompt has nothing to condition on")
    ids, mask = pad_left(rows, pad)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def read_residual(
    residual: ResidualValueNetwork,
    tokenizer,
    prompt_texts: Sequence[str],
    response_texts: Sequence[str],
) -> torch.Tensor:
    """r after each prompt + response text, read in the residual's own tokenizer: (batch, vocab)."""
    rows = [
        tokenizer(p, add_special_tokens=False).input_ids
        + tokenizer(r, add_special_tokens=False).input_ids
        for p, r in zip(prompt_texts, response_texts, strict=True)
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(residual.parameters()).device
    return residual.step(*(t.to(device) for t in left_pad(rows, pad)))[0]


def _same_ids_map(residual_tokenizer, base_tokenizer, vocab_map: VocabularyMap | None) -> bool:
    if vocab_map is not None:
        return vocab_map.shared_ids
    if residual_tokenizer.get_vocab() != base_tokenizer.get_vocab():
        raise ValueError("the residual has another vocabulary than the base: pass a VocabularyMap")
    return True


def _choose(
    log_probs: torch.Tensor, settings: TokenGuidanceSettings, generator: torch.Generator
) -> int:
    if settings.greedy:
        return int(torch.argmax(log_probs))
    top = torch.topk(log_probs / settings.temperature, min(settings.top_k, log_probs.shape[-1]))
    pick = torch.multinomial(torch.softmax(top.values, dim=-1), 1, generator=generator)
    return int(top.indices[pick])


@torch.no_grad()
def decode_with_residual(
    base_model,
    base_tokenizer,
    residual: ResidualValueNetwork | None,
    residual_tokenizer,
    prompt_texts: Sequence[str],
    settings: TokenGuidanceSettings,
    seeds: Sequence[int],
    vocab_map: VocabularyMap | None = None,
) -> list[tuple[list[int], bool]]:
    """Per prompt: (response token ids of the base's tokenizer, without EOS; ended with EOS).

    `residual` None decodes the base alone, with the same sampling. The prompts are already
    rendered (chat template) text. On CPU it runs with `settings.threads` torch threads (see
    `valuefn.token_guidance`).
    """
    if len(seeds) != len(prompt_texts):
        raise ValueError(f"{len(prompt_texts)} prompts but {len(seeds)} seeds")
    if not prompt_texts:
        return []
    with decoding_threads(base_model, settings.threads):
        eos = base_tokenizer.eos_token_id
        pad = base_tokenizer.pad_token_id if base_tokenizer.pad_token_id is not None else eos
        same_ids = residual is None or _same_ids_map(residual_tokenizer, base_tokenizer, vocab_map)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        device = base_model.device

        prompt_ids = [base_tokenizer(t, add_special_tokens=False).input_ids for t in prompt_texts]
        ids, mask, positions = (t.to(device) for t in left_pad(prompt_ids, pad))
        base_cache = residual_cache = None
        responses: list[list[int]] = [[] for _ in prompt_texts]
        ended = [False] * len(prompt_texts)
        for _ in range(settings.max_new_tokens):
            out = base_model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=base_cache,
                use_cache=True,
                logits_to_keep=1,
            )
            base_cache, log_probs = out.past_key_values, out.logits[:, -1].float()
            if residual is not None:
                if same_ids:
                    r, residual_cache = residual.step(ids, mask, positions, residual_cache)
                else:
                    texts = [base_tokenizer.decode(r, skip_special_tokens=True) for r in responses]
                    r = read_residual(residual, residual_tokenizer, prompt_texts, texts)
                log_probs = guided_log_probs(
                    log_probs, r.to(device), residual.connection, vocab_map
                )
            step = []
            for b, generator in enumerate(generators):
                token = eos if ended[b] else _choose(log_probs[b].cpu(), settings, generator)
                if not ended[b] and token == eos:
                    ended[b] = True
                elif not ended[b]:
                    responses[b].append(token)
                step.append(token)
            if all(ended):
                break
            ids = torch.tensor([[t] for t in step], device=device)
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions[:, -1:] + 1
        return [(response, done) for response, done in zip(responses, ended, strict=True)]
