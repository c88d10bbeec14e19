"""The cost counter: its arithmetic, its meters, and what a tiny search adds to it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from iro.core.cost import (
    Cost,
    count_reward_calls,
    count_sampling,
    count_value_tokens,
    measure,
)
from iro.core.engines.base import Continuation, SamplingSettings
from iro.core.engines.hf_engine import HFEngine
from iro.reward import LengthPenalty, WeightedSum
from iro.valuefn.model import TokenValueModel
from iro.valuefn.scoring import LoadedValue, ValueEnsemble
from iro.valuefn.search import SearchSettings, guided_search


def test_meters_count_only_while_open_and_nest():
    count_reward_calls(5)  # no meter open: nothing to add to
    with measure() as outer:
        count_reward_calls(2)
        with measure() as inner:
            count_value_tokens(3)
            with ThreadPoolExecutor(max_workers=4) as pool:  # reported from worker threads
                list(pool.map(count_reward_calls, [1] * 10))
        count_value_tokens(4)
    count_reward_calls(7)
    assert (inner.reward_calls, inner.value_tokens) == (10, 3)
    assert (outer.reward_calls, outer.value_tokens) == (12, 7)
    assert 0 < inner.seconds <= outer.seconds
    with measure() as later:
        pass
    assert later == Cost(seconds=later.seconds)


def test_sampled_tokens_include_the_end_and_an_uncached_engine_reads_every_prefix():
    outputs = [
        [Continuation((7, 8), ended=True), Continuation((7,), ended=False)],
        [Continuation((9, 9, 9), ended=False)],
    ]
    with measure() as uncached:
        count_sampling([3, 5], outputs)
    # sampled: 2 + end, 1, 3; computed: each prefix, then every sampled token but the last
    assert uncached.sampled_tokens == 7
    assert uncached.policy_tokens == (3 + 3 - 1) + (3 + 1 - 1) + (5 + 3 - 1)
    with measure() as reported:
        count_sampling([3, 5], outputs, computed=11)
    assert (reported.policy_tokens, reported.sampled_tokens) == (11, 7)


@pytest.fixture
def value_model(tiny_lm):
    return TokenValueModel.from_causal_lm(str(tiny_lm), 1).eval()


def test_each_value_model_reads_a_prompt_once_then_only_new_tokens(value_model, tiny_tokenizer):
    members = [LoadedValue(value_model, tiny_tokenizer, 1.0, name=f"v{i}") for i in range(2)]
    ensemble = ValueEnsemble(members, max_length=64)
    prompt = "the list of"  # 3 tokens
    with measure() as cost:
        ensemble.score([prompt], ["a file"], [False])  # the prompt, then 2 response tokens
        ensemble.score([prompt] * 2, ["a file is", "a file to"], [False, False])  # 1 new each
    assert cost.value_tokens == 2 * (3 + 2 + 1 + 1)


def test_a_tiny_search_costs_its_candidates_tokens_reads_and_reward_calls(
    tiny_lm, tiny_tokenizer, value_model
):
    engine = HFEngine(str(tiny_lm), dtype="float32", trust_remote_code=False)
    calls = []  # (requests, outputs) of every engine call
    prompts_read, responses_read = [], []  # tokens given to the value model's forward passes
    continue_batch = engine.continue_batch
    prefill, continue_responses = value_model.prefill, value_model.continue_responses

    def recorded_batch(requests, sampling):
        calls.append((requests, continue_batch(requests, sampling)))
        return calls[-1][1]

    def recorded_prefill(rows, *args):
        prompts_read.extend(map(len, rows))
        return prefill(rows, *args)

    def recorded_responses(prompts, reused, new_ids, *args):
        responses_read.extend(map(len, new_ids))
        return continue_responses(prompts, reused, new_ids, *args)

    engine.continue_batch = recorded_batch
    value_model.prefill, value_model.continue_responses = recorded_prefill, recorded_responses
    value_model.prior = "reward"  # a residual on the reward of the prefix: the prior is read
    reward = WeightedSum([(LengthPenalty(target_words=2, per_word=0.1), 1.0)])
    ensemble = ValueEnsemble(
        [LoadedValue(value_model, tiny_tokenizer, 1.0)],
        max_length=64,
        prior=lambda prompts, responses: reward.score(prompts, responses),
    )
    texts = ["the list of data", "a file"]
    ids = [tiny_tokenizer(t).input_ids for t in texts]
    settings = SearchSettings(beams=2, children=2, chunk_tokens=2, max_new_tokens=4)
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0)

    with measure() as cost:
        guided_search(engine, tiny_tokenizer, texts, ids, settings, sampling, ensemble.score, 0)

    candidates = [[c for cs in outputs for c in cs] for _, outputs in calls]
    assert len(calls) == 2 and len(candidates[0]) == 2 * (2 * 2)  # two chunks; the roots: w*k
    assert cost.sampled_tokens == sum(len(c.token_ids) + c.ended for cs in candidates for c in cs)
    assert cost.policy_tokens == sum(
        len(request.prefix_ids) + len(c.token_ids) + c.ended - 1
        for requests, outputs in calls
        for request, continuations in zip(requests, outputs, strict=True)
        for c in continuations
    )
    assert cost.reward_calls == sum(map(len, candidates))  # the prior, on every candidate
    assert sorted(prompts_read) == sorted(map(len, ids))  # each prompt once
    assert cost.value_tokens == sum(prompts_read) + sum(responses_read)
