import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from iro.core.engines.base import Continuation, ContinuationRequest, Engine, SamplingSettings
from iro.core.engines.hf_engine import HFEngine
from iro.valuefn.search import (
    Candidate,
    SearchSettings,
    _request_seed,
    guided_search,
    select_diversity_first,
    select_top_w,
)


def cands(*pairs: tuple[str, float]) -> list[Candidate]:
    return [Candidate((i,), text, False, score) for i, (text, score) in enumerate(pairs)]


def test_top_w_orders_by_score_and_breaks_ties_by_position():
    pool = cands(("a", 0.1), ("b", 0.5), ("c", 0.5), ("d", 0.9))
    assert select_top_w(pool, 3) == [3, 1, 2]


def test_diversity_first_prefers_distinct_texts():
    pool = cands(("same", 0.9), ("same", 0.8), ("other", 0.1), ("third", 0.05))
    assert select_diversity_first(pool, 3) == [0, 2, 3]
    # duplicates fill only once the distinct texts run out, best duplicate first
    assert select_diversity_first(pool, 4) == [0, 2, 3, 1]
    ties = cands(("x", 0.5), ("y", 0.5), ("x", 0.5))
    assert select_diversity_first(ties, 2) == [0, 1]


def test_diversity_first_never_keeps_a_duplicate_while_a_distinct_is_left():
    rng = np.random.default_rng(0)
    for _ in range(200):
        texts = rng.choice(list("abcd"), size=8)
        pool = cands(*[(t, float(s)) for t, s in zip(texts, rng.random(8), strict=True)])
        w = int(rng.integers(1, 8))
        chosen = [pool[i].text for i in select_diversity_first(pool, w)]
        n_distinct = len(set(texts))
        assert len(set(chosen)) == min(w, n_distinct)


class ScriptedEngine(Engine):
    """Deterministic continuations from the seed; records every request it gets."""

    name = "scripted"
    eos_token_id = 1

    def __init__(self):
        self.requests: list[ContinuationRequest] = []
        self.calls: list[tuple[ContinuationRequest, list[Continuation]]] = []

    def continue_batch(self, requests: Sequence[ContinuationRequest], sampling: SamplingSettings):
        out = self._continue(requests)
        self.requests.extend(requests)
        self.calls.extend(zip(requests, out, strict=True))
        return out

    def _continue(self, requests: Sequence[ContinuationRequest]) -> list[list[Continuation]]:
        out = []
        for r in requests:
            rng = np.random.default_rng(r.seed)
            out.append(
                [
                    Continuation(
                        tuple(int(t) for t in rng.integers(3, 30, size=r.max_tokens)),
                        bool(rng.random() < 0.3),
                    )
                    for _ in range(r.n)
                ]
            )
        return out


def length_scorer(prompts, responses, ended):
    return np.array(
        [len(r.split()) + (0.5 if e else 0.0) for r, e in zip(responses, ended, strict=True)]
    )


def test_search_invariants_with_scripted_engine(tiny_tokenizer):
    engine = ScriptedEngine()
    settings = SearchSettings(beams=3, children=2, chunk_tokens=4, max_new_tokens=13)
    pools = guided_search(
        engine,
        tiny_tokenizer,
        ["p0", "p1"],
        [[5, 6], [7]],
        settings,
        SamplingSettings(),
        length_scorer,
        seed=1,
    )
    assert len(pools) == 2
    for pool in pools:
        assert pool and all(len(c.response_ids) <= 13 for c in pool)
        assert all(c.finished(13) for c in pool)
        assert [c.score for c in pool] == sorted((c.score for c in pool), reverse=True)
    # the root spawns w*k, later beams k; no request ever exceeds the remaining budget
    assert {r.n for r in engine.requests} == {6, 2}
    for r in engine.requests:
        prompt_len = 2 if r.prefix_ids[:2] == (5, 6) else 1
        assert r.max_tokens <= 13 - (len(r.prefix_ids) - prompt_len)
    # finished beams never grow: no request continues a prefix that ended with EOS
    ended_prefixes = {
        (*r.prefix_ids, *c.token_ids) for r, outs in engine.calls for c in outs if c.ended
    }
    assert ended_prefixes  # the script did end candidates early...
    # ...and some of them survived selection and were carried to the end, so they were beams
    early = [c for pool in pools for c in pool if c.ended and len(c.response_ids) < 13]
    assert early
    for r in engine.requests:
        assert r.prefix_ids not in ended_prefixes
    assert len({r.prefix_ids for r in engine.requests}) == len(engine.requests)


def test_search_is_reproducible_and_seed_sensitive(tiny_tokenizer):
    settings = SearchSettings(beams=2, children=2, chunk_tokens=3, max_new_tokens=9)
    run = lambda seed: guided_search(  # noqa: E731
        ScriptedEngine(),
        tiny_tokenizer,
        ["p"],
        [[4]],
        settings,
        SamplingSettings(),
        length_scorer,
        seed,
    )
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_searching_prompts_in_groups_changes_the_calls_not_the_samples(tiny_tokenizer):
    settings = SearchSettings(beams=2, children=2, chunk_tokens=3, max_new_tokens=9)
    prompts, ids = ["p0", "p1", "p2", "p3", "p4"], [[4], [5], [6], [7], [8]]

    def run(group):
        engine = ScriptedEngine()
        calls = []
        engine_call = engine.continue_batch
        engine.continue_batch = lambda r, s: calls.append(len(r)) or engine_call(r, s)
        pools = guided_search(
            engine, tiny_tokenizer, prompts, ids, settings, SamplingSettings(), length_scorer,
            seed=3, prompts_per_call=group,
        )  # fmt: skip
        return pools, calls

    together, calls_together = run(None)
    grouped, calls_grouped = run(2)
    assert grouped == together
    # requests per engine call: at most the group's 2 prompts' beams, so more calls
    assert max(calls_grouped) <= 2 * settings.beams
    assert len(calls_grouped) > len(calls_together)


@pytest.fixture(scope="module")
def hf_engine(tiny_lm):
    return HFEngine(str(tiny_lm), dtype="float32", trust_remote_code=False)


def test_best_of_n_through_search_equals_the_sampler(hf_engine, tiny_tokenizer):
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0)
    prompts = [tiny_tokenizer("the list of data").input_ids, tiny_tokenizer("a file").input_ids]
    pools = guided_search(
        hf_engine,
        tiny_tokenizer,
        ["x", "y"],
        prompts,
        SearchSettings.best_of_n(4, 10),
        sampling,
        None,
        seed=5,
    )
    direct = hf_engine.continue_batch(
        [
            ContinuationRequest(tuple(p), 4, 10, _request_seed(5, i, 0, 0))
            for i, p in enumerate(prompts)
        ],
        sampling,
    )
    for pool, samples in zip(pools, direct, strict=True):
        finished = [s for s in samples if s.ended or len(s.token_ids) >= 10]
        assert [c.response_ids for c in pool] == [s.token_ids for s in finished]


def test_one_beam_one_child_is_plain_sampling(hf_engine, tiny_tokenizer):
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0)
    prompt = tiny_tokenizer("the document").input_ids
    pools = guided_search(
        hf_engine,
        tiny_tokenizer,
        ["x"],
        [prompt],
        SearchSettings(1, 1, None, 12),
        sampling,
        None,
        seed=9,
    )
    [[sample]] = hf_engine.continue_batch(
        [ContinuationRequest(tuple(prompt), 1, 12, _request_seed(9, 0, 0, 0))], sampling
    )
    assert [c.response_ids for c in pools[0]] == [sample.token_ids]
    assert pools[0][0].text == tiny_tokenizer.decode(sample.token_ids, skip_special_tokens=True)


def test_beam_search_on_the_transformers_engine_samples_what_it_always_has(
    hf_engine, tiny_tokenizer
):
    """Pinned pools of a beam search whose stop string ends candidates early and carries them."""
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0)
    prompts = [tiny_tokenizer("the list of data").input_ids, tiny_tokenizer("a file").input_ids]

    def scorer(prompts, responses, ended):
        return np.array(
            [
                r.count("e") - 0.1 * len(r.split()) + 3 * e
                for r, e in zip(responses, ended, strict=True)
            ]
        )

    settings = SearchSettings(2, 3, 3, 10, stop_strings=("function",))
    pools = guided_search(
        hf_engine, tiny_tokenizer, ["x", "y"], prompts, settings, sampling, scorer, seed=11
    )
    assert [[(c.response_ids, c.ended, round(c.score, 3)) for c in pool] for pool in pools] == [
        [((23, 33, 3, 34, 27, 8), True, 5.7), ((29,), True, 3.9)],
        [
            ((32, 24, 20, 17, 23, 30, 34, 14, 5), True, 8.4),
            ((32, 24, 20, 17, 23, 30), True, 8.4),
            ((32, 24, 20, 7), True, 6.6),
        ],
    ]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="chunk_tokens"):
        SearchSettings(2, 2, 0, 10)
    with pytest.raises(ValueError, match="selection"):
        SearchSettings(2, 2, 4, 10, selection="random")
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="keep_fraction"):
            SearchSettings.early_rejection(8, 2, fraction, 10)
    with pytest.raises(ValueError, match="children = 1"):
        SearchSettings(8, 2, 2, 10, keep_fraction=0.5)


# -- early rejection --


class StepEngine(ScriptedEngine):
    """ScriptedEngine that also keeps each engine call's requests and outputs, one list a step."""

    def __init__(self, never_end: bool = False):
        super().__init__()
        self.never_end = never_end
        self.steps: list[list[tuple[ContinuationRequest, list[Continuation]]]] = []

    def _continue(self, requests: Sequence[ContinuationRequest]) -> list[list[Continuation]]:
        out = super()._continue(requests)
        if self.never_end:
            out = [[Continuation(c.token_ids, False) for c in outs] for outs in out]
        self.steps.append(list(zip(requests, out, strict=True)))
        return out


def text_scorer(prompts, responses, ended):
    """A score that is a function of the text alone, with no ties between distinct texts."""
    return np.array([int(hashlib.sha256(r.encode()).hexdigest()[:8], 16) for r in responses])


def rejection(engine: Engine, tokenizer, settings: SearchSettings, scorer=text_scorer):
    [pool] = guided_search(
        engine, tokenizer, ["p"], [[4]], settings, SamplingSettings(), scorer, seed=5
    )
    return pool


def test_early_rejection_continues_only_the_planned_best_once_each(tiny_tokenizer):
    engine = StepEngine(never_end=True)
    pool = rejection(engine, tiny_tokenizer, SearchSettings.early_rejection(8, 2, 0.5, 10))

    # the root's 8 samples, then ceil(0.5 * alive) survivors, each continued by one chunk
    assert [[r.n for r, _ in step] for step in engine.steps] == [[8], [1] * 4, [1] * 2, [1], [1]]
    for step, following in zip(engine.steps, engine.steps[1:], strict=False):
        children = [(*r.prefix_ids, *c.token_ids) for r, outs in step for c in outs]
        texts = [tiny_tokenizer.decode(ids[1:], skip_special_tokens=True) for ids in children]
        ranked = [children[i] for i in np.argsort(-text_scorer(None, texts, None), kind="stable")]
        continued = [r.prefix_ids for r, _ in following]
        assert sorted(continued) == sorted(ranked[: len(following)])  # the best, none halted
        assert len(set(continued)) == len(continued)  # each survivor once
    assert [c.response_ids for c in pool] == [
        (*r.prefix_ids[1:], *c.token_ids) for r, outs in engine.steps[-1] for c in outs
    ]


def test_early_rejection_keeps_every_finished_candidate_and_no_halted_one(tiny_tokenizer):
    engine = StepEngine()
    settings = SearchSettings.early_rejection(8, 3, 0.5, 12)
    pool = rejection(engine, tiny_tokenizer, settings)

    generated = [
        Candidate((*r.prefix_ids[1:], *c.token_ids), "", c.ended)
        for step in engine.steps
        for r, outs in step
        for c in outs
    ]
    finished = {c.response_ids for c in generated if c.finished(12)}
    assert any(c.ended for c in generated) and len(engine.steps) > 2
    assert sorted(c.response_ids for c in pool) == sorted(finished)
    continued = {r.prefix_ids[1:] for step in engine.steps[1:] for r, _ in step}
    assert not continued & finished  # a finished candidate is never continued


def test_early_rejection_keeping_all_starts_from_n_plain_samples(hf_engine, tiny_tokenizer):
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0)
    prompt = tiny_tokenizer("the list of data").input_ids
    [pool] = guided_search(
        hf_engine,
        tiny_tokenizer,
        ["x"],
        [prompt],
        SearchSettings.early_rejection(6, 3, 1.0, 9),
        sampling,
        text_scorer,
        seed=4,
    )
    [samples] = hf_engine.continue_batch(
        [ContinuationRequest(tuple(prompt), 6, 9, _request_seed(4, 0, 0, 0))], sampling
    )
    assert len(pool) == 6  # nobody halted
    assert sorted(c.response_ids[:3] for c in pool) == sorted(s.token_ids[:3] for s in samples)


class BranchEngine(ScriptedEngine):
    """Seeded chunks of words that never include `marker`, except the last child of every request,
    whose chunk has `marker` at `position`; no continuation ever ends by itself."""

    def __init__(self, marker: int, position: int = 0):
        super().__init__()
        self.marker, self.position = marker, position

    def _continue(self, requests: Sequence[ContinuationRequest]) -> list[list[Continuation]]:
        out = []
        for r in requests:
            rng = np.random.default_rng(r.seed)
            chunks = [[int(t) for t in rng.integers(3, 30, size=r.max_tokens)] for _ in range(r.n)]
            chunks[-1][min(self.position, r.max_tokens - 1)] = self.marker
            out.append([Continuation(tuple(chunk), False) for chunk in chunks])
        return out


MARKER = "document"  # a word the scripted engines emit only where they are told to


def marker_scorer(sign: float):
    return lambda prompts, responses, ended: np.array(
        [sign * r.split().count(MARKER) for r in responses], dtype=float
    )


def best_texts(pools: list[list[Candidate]]) -> list[str]:
    return [pool[0].text for pool in pools]


def test_a_scorer_that_favours_a_marker_keeps_it_and_none_or_the_opposite_does_not(
    tiny_tokenizer,
):
    marker = tiny_tokenizer.convert_tokens_to_ids(MARKER)
    settings = SearchSettings(beams=2, children=3, chunk_tokens=3, max_new_tokens=9)

    def run(scorer):
        engine = BranchEngine(marker)
        pools = guided_search(
            engine, tiny_tokenizer, ["p", "q"], [[4], [5, 6]], settings, SamplingSettings(),
            scorer, seed=3,
        )  # fmt: skip
        generated = [tiny_tokenizer.decode(c.token_ids) for _, outs in engine.calls for c in outs]
        assert sum(MARKER in text for text in generated) >= 2 * 3  # offered at every step
        return pools

    favoured = run(marker_scorer(+1.0))
    for pool in favoured:
        # every step appended the marker chunk to a beam that already had them
        assert pool[0].text.split().count(MARKER) == 3 and pool[0].score == 3.0
    for pools in (run(None), run(marker_scorer(-1.0))):
        for text in best_texts(pools):
            assert MARKER not in text


def test_with_one_beam_the_search_follows_the_favoured_branch_at_every_step(tiny_tokenizer):
    marker = tiny_tokenizer.convert_tokens_to_ids(MARKER)
    settings = SearchSettings(beams=1, children=3, chunk_tokens=3, max_new_tokens=12)
    prompt = [4, 5]

    def run(scorer):
        engine = BranchEngine(marker)
        pools = guided_search(
            engine, tiny_tokenizer, ["p"], [prompt], settings, SamplingSettings(), scorer, seed=7
        )
        return engine, pools[0][0]

    engine, best = run(marker_scorer(+1.0))
    assert len(engine.requests) == 4  # one beam, four chunks
    for step, request in enumerate(engine.requests):
        response = request.prefix_ids[len(prompt) :]
        assert len(response) == 3 * step
        assert all(response[i] == marker for i in range(0, len(response), 3))  # each chunk's pick
    assert best.response_ids[::3] == (marker,) * 4 and best.text.split().count(MARKER) == 4

    engine, best = run(marker_scorer(-1.0))
    assert len(engine.requests) == 4
    assert all(marker not in r.prefix_ids for r in engine.requests)
    assert marker not in best.response_ids


def test_a_stop_string_cuts_the_text_there_and_ends_the_candidate(tiny_tokenizer):
    stop = "sentence"  # emitted only where BranchEngine puts it: the 2nd word of a last child
    engine = BranchEngine(tiny_tokenizer.convert_tokens_to_ids(stop), position=1)
    settings = SearchSettings(
        beams=2, children=2, chunk_tokens=3, max_new_tokens=12, stop_strings=(stop,)
    )

    def ended_first(prompts, responses, ended):  # keeps the stopped candidates as beams
        return np.array([10.0 * e + len(r.split()) for r, e in zip(responses, ended, strict=True)])

    [pool] = guided_search(
        engine, tiny_tokenizer, ["p"], [[4]], settings, SamplingSettings(), ended_first, seed=2
    )
    stopped = [c for c in pool if stop in tiny_tokenizer.decode(c.response_ids)]
    assert len(stopped) == 2  # one per step: the root's last child, then its sibling beam's
    for candidate in stopped:
        full = tiny_tokenizer.decode(candidate.response_ids, skip_special_tokens=True)
        assert candidate.text == full[: full.index(stop)] and stop not in candidate.text
        assert candidate.ended  # no continuation ended by itself: the stop string ended it
        assert len(candidate.response_ids) < 12
    # a candidate that hit a stop string is never continued
    for request in engine.requests:
        assert stop not in tiny_tokenizer.decode(list(request.prefix_ids))
