"""Value-guided chunk-level beam search (IRO / CBS "weak-to-strong search").

Per prompt: the empty response expands into w*k samples of up to l tokens; the w best prefixes by
sum_i V_i / beta_i survive, each spawns k continuations of l tokens, and so on until every
surviving beam has finished or max_new_tokens is reached. Finished beams are carried along and
compete with the new children. Best-of-N is the special case w=1, k=N, l=None, and plain sampling
is w=k=1, l=None: both run through this same code. Stop strings end a candidate at the same place
whatever the engine.

Early rejection (Speculative Rejection, Sun et al. 2024) is the case w=N, k=1 with a
`keep_fraction`: the root expands into N samples of l tokens; at each later step only the best
ceil(keep_fraction * alive) unfinished candidates continue, by one chunk each, and the rest are
halted for good. A finished candidate is never halted: it stays in the pool, so the final pool
holds every candidate that reached its end.

All beams of one step go to the engine in a single batched call, for a group of
`prompts_per_call` prompts at a time: a group's prompts then stay in the engine's prefix cache
from one chunk to the next instead of being evicted and recomputed by the other prompts'. Samples
do not depend on the grouping (each request carries its own seed, from the prompt's index).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from iro.core.engines.base import ContinuationRequest, Engine, SamplingSettings

log = logging.getLogger(__name__)

# (prompt texts, response texts, ended flags) -> one score per candidate
Scorer = Callable[[Sequence[str], Sequence[str], Sequence[bool]], np.ndarray]


@dataclass(frozen=True)
class SearchSettings:
    beams: int  # w
    children: int  # k
    chunk_tokens: int | None  # l; None: continue to the end in one step
    max_new_tokens: int
    selection: str = "diversity_first"
    stop_strings: tuple[str, ...] = ()
    # None: beam search; else early rejection, keeping this share of the unfinished each step
    keep_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.beams < 1 or self.children < 1:
            raise ValueError("search needs beams >= 1 and children >= 1")
        if self.keep_fraction is not None:
            if not 0 < self.keep_fraction <= 1:
                raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
            if self.children != 1:
                raise ValueError("early rejection continues each survivor once: children = 1")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1 or None, got {self.chunk_tokens}")
        if self.selection not in SELECTION_RULES:
            raise ValueError(f"unknown selection rule {self.selection!r}")

    @classmethod
    def best_of_n(
        cls, n: int, max_new_tokens: int, stop_strings: tuple[str, ...] = ()
    ) -> SearchSettings:
        return cls(
            beams=1,
            children=n,
            chunk_tokens=None,
            max_new_tokens=max_new_tokens,
            stop_strings=stop_strings,
        )

    @classmethod
    def early_rejection(
        cls,
        n: int,
        chunk_tokens: int,
        keep_fraction: float,
        max_new_tokens: int,
        stop_strings: tuple[str, ...] = (),
    ) -> SearchSettings:
        """N samples of l tokens; the best `keep_fraction` of the unfinished continue each step."""
        return cls(
            beams=n,
            children=1,
            chunk_tokens=chunk_tokens,
            max_new_tokens=max_new_tokens,
            selection="top_w",  # halt the lowest scores, whatever their texts
            stop_strings=stop_strings,
            keep_fraction=keep_fraction,
        )


@dataclass(frozen=True)
class Candidate:
    response_ids: tuple[int, ...]
    text: str
    ended: bool  # the policy emitted end-of-sequence
    score: float = 0.0  # sum_i V_i / beta_i, 0 when there is no scorer

    def finished(self, max_new_tokens: int) -> bool:
        return self.ended or len(self.response_ids) >= max_new_tokens


def select_top_w(candidates: Sequence[Candidate], w: int) -> list[int]:
    """Indices of the w best scores; ties keep the earlier candidate (stable sort)."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    return order[:w]


def select_diversity_first(candidates: Sequence[Candidate], w: int) -> list[int]:
    """Best distinct texts first; duplicates fill the remaining places only if distinct run out."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    seen: set[str] = set()
    distinct, duplicates = [], []
    for i in order:
        (duplicates if candidates[i].text in seen else distinct).append(i)
        seen.add(candidates[i].text)
    return (distinct + duplicates)[:w]


SELECTION_RULES = {"diversity_first": select_diversity_first, "top_w": select_top_w}


def beams_to_keep(settings: SearchSettings, unfinished: int) -> int:
    """How many candidates the step keeps: w for the beam search; for early rejection the best
    ceil(keep_fraction * unfinished) of the unfinished, at least one."""
    if settings.keep_fraction is None:
        return settings.beams
    return max(1, math.ceil(settings.keep_fraction * unfinished))


def next_beams(pool: Sequence[Candidate], settings: SearchSettings) -> list[Candidate]:
    """The candidates a step keeps. The beam search keeps the best w of the pool, finished or
    not. Early rejection keeps every finished candidate (it is a final answer already, never
    halted) and the best of the unfinished, which alone continue."""
    select = SELECTION_RULES[settings.selection]
    alive = [c for c in pool if not c.finished(settings.max_new_tokens)]
    keep = beams_to_keep(settings, len(alive))
    if settings.keep_fraction is None:
        return [pool[i] for i in select(pool, keep)]
    finished = [c for c in pool if c.finished(settings.max_new_tokens)]
    return finished + [alive[i] for i in select(alive, keep)]


def _apply_stop_strings(text: str, ended: bool, stop_strings: tuple[str, ...]) -> tuple[str, bool]:
    """Cut the text at the first stop string and end the candidate there.

    Done here rather than by each engine, so that every engine stops in exactly the same place.
    """
    cuts = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, ended)


def _request_seed(seed: int, prompt_index: int, step: int, beam_index: int) -> int:
    return int(np.random.SeedSequence([seed, prompt_index, step, beam_index]).generate_state(1)[0])


def guided_search(
    engine: Engine,
    tokenizer,
    prompt_texts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    settings: SearchSettings,
    sampling: SamplingSettings,
    scorer: Scorer | None,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    prompts_per_call: int | None = None,
    first_index: int = 0,
) -> list[list[Candidate]]:
    """Run the search for every prompt; returns each prompt's final candidate pool.

    The pool is the last step's candidates that finished (all of them if none did), ranked by
    value: the caller picks the final output from it, by a reward (best-of-(w*k)) or by value.
    `prompts_per_call`: search this many prompts at a time (None: all at once). `first_index`:
    the index of `prompt_texts[0]` in a larger table that was split into shards; seeds come from
    that global index, so a shard searched alone samples what the whole table would.
    """
    group = prompts_per_call or max(len(prompt_texts), 1)
    pools: list[list[Candidate]] = []
    for start in range(0, len(prompt_texts), group):
        pools += _search_group(
            engine, tokenizer, prompt_texts[start : start + group],
            prompt_ids[start : start + group], first_index + start, settings, sampling, scorer,
            seed, progress,
        )  # fmt: skip
    return pools


def _search_group(
    engine: Engine,
    tokenizer,
    prompt_texts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    first_index: int,
    settings: SearchSettings,
    sampling: SamplingSettings,
    scorer: Scorer | None,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> list[list[Candidate]]:
    """The search for prompts `first_index`, `first_index + 1`, ...: one engine call per step."""
    n_prompts = len(prompt_texts)
    beams: list[list[Candidate]] = [[Candidate((), "", False)] for _ in range(n_prompts)]
    pools: list[list[Candidate]] = [[] for _ in range(n_prompts)]
    step = 0
    while True:
        requests, owners = [], []
        for p, prompt_beams in enumerate(beams):
            for b, beam in enumerate(prompt_beams):
                if beam.finished(settings.max_new_tokens):
                    continue
                remaining = settings.max_new_tokens - len(beam.response_ids)
                chunk = min(settings.chunk_tokens or remaining, remaining)
                # the root expands into w*k samples, a surviving beam into k (1 for rejection)
                n = settings.beams * settings.children if step == 0 else settings.children
                requests.append(
                    ContinuationRequest(
                        prefix_ids=(*prompt_ids[p], *beam.response_ids),
                        n=n,
                        max_tokens=chunk,
                        seed=_request_seed(seed, first_index + p, step, b),
                    )
                )
                owners.append((p, beam))
        if not requests:
            break
        outputs = engine.continue_batch(requests, sampling)

        new: list[list[Candidate]] = [[] for _ in range(n_prompts)]
        for (p, beam), continuations in zip(owners, outputs, strict=True):
            for c in continuations:
                ids = beam.response_ids + c.token_ids
                text = tokenizer.decode(ids, skip_special_tokens=True)
                text, ended = _apply_stop_strings(text, c.ended, settings.stop_strings)
                new[p].append(Candidate(ids, text, ended))
        if scorer is not None:
            flat = [(p, i) for p in range(n_prompts) for i in range(len(new[p]))]
            scores = scorer(
                [prompt_texts[p] for p, _ in flat],
                [new[p][i].text for p, i in flat],
                [new[p][i].ended for p, i in flat],
            )
            for (p, i), score in zip(flat, scores, strict=True):
                new[p][i] = replace(new[p][i], score=float(score))

        for p in range(n_prompts):
            if not new[p]:
                continue  # every beam of this prompt had already finished
            carried = [b for b in beams[p] if b.finished(settings.max_new_tokens)]
            pool = new[p] + carried
            pools[p] = pool
            beams[p] = next_beams(pool, settings)
        step += 1
        if progress is not None:
            longest = max(len(b.response_ids) for prompt_beams in beams for b in prompt_beams)
            progress(step, longest)

    final = []
    for pool in pools:
        done = [c for c in pool if c.finished(settings.max_new_tokens)] or pool
        final.append(sorted(done, key=lambda c: -c.score))
    return final
