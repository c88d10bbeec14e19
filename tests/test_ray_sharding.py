"""Generation and reward scoring sharded across Ray actors (a local 2-worker cluster, the tiny
model): the shards' tables merge into exactly the single-process table for the same seeds.

Starting the cluster and its two actors takes ~15 s on 2 busy cores (the first run after
installing Ray, with cold caches, ~45 s), so these stay in the fast set."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from iro.core.config import ConfigError, RayConfig, RunConfig, parse_config
from iro.pipeline import execution, generation, scoring, sharding
from iro.pipeline.execution import generate, score_rows
from iro.valuefn.model import TokenValueModel
from iro.valuefn.search import SearchSettings

LENGTH = [{"type": "length_penalty", "options": {"target_words": 3, "per_word": 0.1}}]
CHUNKED = SearchSettings(beams=2, children=2, chunk_tokens=2, max_new_tokens=6)
PROMPTS = pd.DataFrame(
    {
        "id": [f"p{i}" for i in range(5)],
        "prompt": [
            "the list of data",
            "a file path",
            "returns the value",
            "one new object",
            "the class method",
        ],
        "reference": ["a list", None, "the value", "an object", "a method"],
    }
)


def config(
    model: Path, prompts_per_call: int | None = 2, reward: dict | None = None, **ray: object
) -> RunConfig:
    return parse_config(
        {
            "seed": 3,
            "policy": {
                "model": str(model),
                "engine": "hf",
                "max_model_len": 64,
                "prompts_per_call": prompts_per_call,
            },
            "data": {"use_chat_template": False, "prompt_template": "{prompt}"},
            "reward": reward or {"components": LENGTH},
            "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_k": 0},
            "value": {"backbone": str(model), "num_layers": 1, "max_length": 64},
            "ray": ray,
        }
    )


@contextlib.contextmanager
def only_actors_can_work():
    """In this (the driver's) process, generating or scoring a table raises: a table made under
    it came from the Ray actors, which import the real functions in their own processes."""

    def refuse(*args, **kwargs):
        raise AssertionError("the driver generated or scored rows itself")

    with pytest.MonkeyPatch.context() as patch:
        for module in (execution, generation):
            patch.setattr(module, "generate_shard", refuse)
        for module in (execution, scoring):
            patch.setattr(module, "score_table", refuse)
        yield


def both_ways(
    model: Path, prompts: pd.DataFrame = PROMPTS, workers: int = 2, value_dirs=(), **kwargs
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the single-process table, the sharded one, made by the actors) for the same seed."""
    single = generate(config(model), prompts, CHUNKED, value_dirs, 11, **kwargs)
    with only_actors_can_work():
        sharded = generate(
            config(model, workers=workers), prompts, CHUNKED, value_dirs, 11, **kwargs
        )
    return single, sharded


@pytest.fixture(scope="module")
def ray_cluster():
    sharding.connect(RayConfig(workers=2))  # the local cluster generate would start: 2 CPUs
    yield
    sharding.shutdown()


@pytest.fixture(scope="module")
def value_dir(tiny_lm, tiny_tokenizer, tmp_path_factory) -> Path:
    """An untrained value model whose random head still ranks the beams (it only has to guide)."""
    torch.manual_seed(5)
    model = TokenValueModel.from_causal_lm(str(tiny_lm), num_layers=1)
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    directory = tmp_path_factory.mktemp("value") / "v"
    model.save(directory, tiny_tokenizer)
    return directory


@pytest.mark.parametrize(
    ("n", "workers", "per_call", "bounds"),
    [
        (5, 2, 2, [(0, 4), (4, 5)]),  # 3 groups of 2: boundaries on group boundaries
        (5, 2, 1, [(0, 3), (3, 5)]),
        (8, 3, 2, [(0, 4), (4, 6), (6, 8)]),
        (3, 6, 2, [(0, 2), (2, 3)]),  # more workers than groups: no empty shard
        (5, 4, None, [(0, 5)]),  # all prompts in one engine call: one worker makes it
        (0, 2, 2, []),
    ],
)
def test_shards_are_contiguous_whole_groups(n, workers, per_call, bounds):
    assert sharding.shard_bounds(n, workers, per_call) == bounds


def test_a_chunked_search_merges_into_the_single_process_table(ray_cluster, tiny_lm):
    assert sharding.shard_bounds(5, 2, 2) == [(0, 4), (4, 5)]  # uneven shards
    single, sharded = both_ways(tiny_lm, guided=False)
    assert list(single["prompt_id"].unique()) == list(PROMPTS["id"])
    assert single["response"].nunique() > 1  # real samples, not one repeated text
    pd.testing.assert_frame_equal(sharded, single)


def test_a_value_guided_search_merges_into_the_single_process_table(
    ray_cluster, tiny_lm, value_dir
):
    single, sharded = both_ways(tiny_lm, value_dirs=[value_dir], guided=True)
    assert single["value_score"].abs().sum() > 0
    pd.testing.assert_frame_equal(sharded, single)


def test_a_reward_guided_search_merges_into_the_single_process_table(ray_cluster, tiny_lm):
    single, sharded = both_ways(tiny_lm, value_dirs=[], prior_only=True)
    assert single["value_score"].abs().sum() > 0
    pd.testing.assert_frame_equal(sharded, single)


def test_reward_scoring_merges_into_the_single_process_table(ray_cluster, tiny_lm):
    table = generate(config(tiny_lm), PROMPTS, CHUNKED, [], 11, guided=False)
    # a neural reward (sentence embeddings, batched) and a rule; shards break on 3-row calls
    reward = {"components": [{"type": "embedding_similarity"}, *LENGTH], "batch_size": 3}
    assert sharding.shard_bounds(len(table), 2, 3)[0] == (0, 12)  # 4 of the 7 calls, then 3
    single = score_rows(config(tiny_lm, reward=reward), table)
    with only_actors_can_work():
        sharded = score_rows(config(tiny_lm, reward=reward, workers=2), table)
    assert single["reward_embedding_similarity"].nunique() > 1
    pd.testing.assert_frame_equal(sharded, single)


def test_more_workers_than_prompt_groups_leave_the_extra_workers_idle(ray_cluster, tiny_lm):
    single, sharded = both_ways(tiny_lm, PROMPTS.iloc[:3], workers=6, guided=False)
    pd.testing.assert_frame_equal(sharded, single)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nowhere"])
def test_a_bad_ray_address_is_named_before_ray_waits_for_it(tiny_lm, address, monkeypatch):
    import ray

    # ray.init would wait minutes for a cluster that is not there: it must never be reached
    joined = []
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: joined.append(kwargs))
    with pytest.raises(ConfigError, match=rf"ray\.address '{address}'"):
        generate(config(tiny_lm, workers=2, address=address), PROMPTS, CHUNKED, [], seed=1)
    assert joined == []


def test_workers_the_cluster_cannot_place_are_refused(ray_cluster, tiny_lm):
    # last: a refused call lets the module's actors go
    cfg = config(tiny_lm, prompts_per_call=1, workers=3)  # 3 CPUs; the cluster has 2
    with pytest.raises(ConfigError, match=r"ray\.cpus_per_worker"):
        generate(cfg, PROMPTS, CHUNKED, [], seed=1, guided=False)
    cfg = config(tiny_lm, workers=2, gpus_per_worker=1)
    with pytest.raises(ConfigError, match=r"ray\.gpus_per_worker"):
        generate(cfg, PROMPTS, CHUNKED, [], seed=1, guided=False)
