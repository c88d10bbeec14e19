"""Property-based tests (hypothesis): the config schema, the reweighting math, the win-rate
statistics. Each property holds for every input hypothesis draws, not only for hand-picked ones.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iro.core.config import RUN_NAME_PATTERN, ConfigError, load_config, parse_config
from iro.core.stats import (
    paired_bootstrap,
    reward_win_rate,
    summarize,
    wilson_interval,
)
from iro.valuefn.reweight import effective_sample_size, reweight, softmax_weights

# modest and reproducible: no example database written into the checkout, no per-example deadline
FAST = settings(max_examples=60, deadline=None, database=None)

# -- the config schema --

positive = st.floats(min_value=1e-3, max_value=1e3)


@st.composite
def valid_configs(draw) -> dict:
    """A config as a user writes it: some sections, each with some of its settings."""
    iterations = draw(st.integers(1, 4))
    beams, children = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    sections = {
        "run_name": st.from_regex(RUN_NAME_PATTERN, fullmatch=True).filter(lambda s: len(s) < 40),
        "seed": st.integers(0, 2**31),
        "search": st.fixed_dictionaries(
            {"beams": st.just(beams), "children": st.just(children)},
            optional={
                "chunk_tokens": st.none() | st.integers(1, 64),
                "selection": st.sampled_from(["diversity_first", "top_w"]),
                "max_candidates": st.integers(beams * children, 512),
            },
        ),
        "sampling": st.fixed_dictionaries(
            {},
            optional={
                "temperature": st.floats(0, 2),
                "top_p": st.floats(0.01, 1),
                "top_k": st.integers(-1, 100),
                "max_new_tokens": st.integers(1, 256),
                "stop": st.none() | st.lists(st.text(min_size=1, max_size=4), max_size=3),
            },
        ),
        "reweight": st.fixed_dictionaries(
            {},
            optional={
                "scheme": st.sampled_from(["argmax", "softmax", "weighted"]),
                "beta": positive,
                "resample_size": st.integers(1, 8),
            },
        ),
        "value": st.fixed_dictionaries(
            {},
            optional={
                "beta": positive | st.lists(positive, min_size=iterations, max_size=6),
                "num_layers": st.none() | st.integers(1, 30),
                "target": st.sampled_from(["reward", "advantage"]),
                "init_from_previous": st.booleans(),
            },
        ),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "prompts_per_iteration": st.integers(1, 10_000),
                "eval_prompts": st.integers(1, 10_000),
                "split_field": st.none() | st.just("split"),
                "use_chat_template": st.booleans(),
            },
        ),
    }
    config = {"iterations": iterations}
    for name in draw(st.sets(st.sampled_from(sorted(sections)))):
        config[name] = draw(sections[name])
    return config


def assert_holds(written, resolved, where: str = "") -> None:
    """Every value written is the value resolved; a flag stays a flag, a number a number."""
    if isinstance(written, dict):
        for key, value in written.items():
            assert_holds(value, resolved[key], f"{where}.{key}")
    elif isinstance(written, list):
        assert len(written) == len(resolved), where
        for w, r in zip(written, resolved, strict=True):
            assert_holds(w, r, where)
    else:
        assert resolved == written and isinstance(resolved, bool) == isinstance(written, bool), (
            where,
            written,
            resolved,
        )


@FAST
@given(valid_configs())
def test_a_valid_config_round_trips(tmp_path_factory, data):
    cfg = parse_config(data)
    assert_holds(data, cfg.model_dump())
    # what `iro check` prints (and a run record keeps) loads back to the same config
    assert parse_config(cfg.model_dump()) == cfg
    path = Path(tmp_path_factory.mktemp("cfg")) / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert load_config(path) == cfg


# (dotted key, invalid values): each must be refused with the key named
INVALID = {
    "iterations": st.integers(max_value=0) | st.booleans() | st.text("abc xyz", min_size=1),
    "run_name": st.text(max_size=12).filter(lambda s: not re.fullmatch(RUN_NAME_PATTERN, s)),
    "search.beams": st.integers(max_value=0),
    "search.children": st.integers(max_value=0),
    "search.chunk_tokens": st.integers(max_value=0),
    "sampling.temperature": st.floats(max_value=0, exclude_max=True) | st.just(math.nan),
    "sampling.top_p": st.floats(max_value=0) | st.floats(min_value=1, exclude_min=True),
    "sampling.max_new_tokens": st.integers(max_value=0),
    "reweight.beta": st.floats(max_value=0) | st.sampled_from([math.nan, math.inf]),
    "reweight.scheme": st.text(max_size=8).filter(
        lambda s: s not in ("argmax", "softmax", "weighted")
    ),
    "value.beta": st.floats(max_value=0) | st.just(math.nan),
    "data.prompts_per_iteration": st.integers(max_value=0),
    "data.eval_prompts": st.integers(max_value=0),
    "policy.trust_remote_code": st.integers() | st.text(max_size=4),
    "policy.max_model_len": st.integers(max_value=63),
}
UNKNOWN_IN = ["", "search.", "sampling.", "value.", "data.", "policy.", "report.judge."]


def nest(dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    data = {leaf: value}
    for part in reversed(parents):
        data = {part: data}
    return data


@FAST
@given(st.sampled_from(sorted(INVALID)).flatmap(lambda k: st.tuples(st.just(k), INVALID[k])))
def test_an_invalid_value_is_refused_naming_its_key(case):
    key, value = case
    with pytest.raises(ConfigError) as err:
        parse_config(nest(key, value))
    assert key in str(err.value)


@FAST
@given(
    st.sampled_from(UNKNOWN_IN),
    st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True),
    st.integers() | st.text(max_size=4),
)
def test_an_unknown_key_is_refused_by_name(section, name, value):
    node = parse_config({}).model_dump()
    for part in section.split(".")[:-1]:
        node = node[part]
    assume(name not in node)  # a misspelling, not a setting
    dotted = f"{section}{name}"
    with pytest.raises(ConfigError, match=rf"{re.escape(dotted)}: unknown key"):
        parse_config(nest(dotted, value))


# -- reweighting --

rewards_st = st.floats(-100, 100)
betas_st = st.floats(1e-2, 1e2)


@st.composite
def scored_tables(draw) -> pd.DataFrame:
    """Candidates of 1..5 prompts, 1..6 each, with rewards in [-100, 100]."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=5))
    rows = []
    for p, size in enumerate(sizes):
        for r in draw(st.lists(rewards_st, min_size=size, max_size=size)):
            rows.append({"prompt_id": f"p{p}", "reward": r, "response": f"r{len(rows)}"})
    return pd.DataFrame(rows)


@FAST
@given(scored_tables(), betas_st, st.integers(1, 4), st.integers(0, 2**16))
def test_weights_are_non_negative_and_average_one_per_prompt(scored, beta, draws, seed):
    sizes = scored.groupby("prompt_id").size()
    for scheme in ("argmax", "softmax", "weighted"):
        table, metrics = reweight(scored, scheme, beta, draws, seed)
        assert (table["weight"] >= 0).all() and np.isfinite(table["weight"]).all()
        per_prompt = table.groupby("prompt_id")["weight"]
        if scheme == "weighted":  # every candidate, loss weight n * softmax: mean 1 per prompt
            assert per_prompt.size().equals(sizes)
            np.testing.assert_allclose(per_prompt.mean(), 1.0, rtol=1e-9)
        elif scheme == "argmax":  # the best candidate of each prompt, the first on ties
            assert per_prompt.size().eq(1).all() and table["weight"].eq(1.0).all()
            best = scored.loc[scored.groupby("prompt_id", sort=False)["reward"].idxmax()]
            assert table["response"].tolist() == best["response"].tolist()
        else:  # `draws` resampled candidates of each prompt, weight 1
            assert per_prompt.size().eq(draws).all() and table["weight"].eq(1.0).all()
            assert set(table["response"]) <= set(scored["response"])
        assert 1 - 1e-9 <= metrics["ess_min"] <= metrics["ess_mean"] <= sizes.max() + 1e-9
        # reweighting toward exp(r / beta) never lowers the mean reward it trains on
        if scheme == "weighted":
            assert metrics["kept_reward_mean"] >= metrics["all_reward_mean"] - 1e-7


@FAST
@given(st.lists(rewards_st, min_size=1, max_size=8), betas_st, st.floats(-1e3, 1e3))
def test_softmax_weights_are_a_distribution_invariant_to_a_shift(rewards, beta, shift):
    weights = softmax_weights(np.array(rewards), beta)
    assert (weights >= 0).all() and math.isclose(weights.sum(), 1.0, rel_tol=1e-12)
    shifted = softmax_weights(np.array(rewards) + shift, beta)
    np.testing.assert_allclose(shifted, weights, atol=1e-9)
    assert 1 - 1e-9 <= effective_sample_size(weights) <= len(rewards) + 1e-9
    # weights rise with the reward
    order = np.argsort(rewards, kind="stable")
    assert (np.diff(weights[order]) >= -1e-12).all()


@FAST
@given(st.lists(st.integers(-50, 50), min_size=2, max_size=8, unique=True))
def test_softmax_limits_are_argmax_and_uniform(levels):
    rewards = np.array(levels, dtype=float)
    n, best = len(rewards), int(np.argmax(rewards))
    # beta -> 0: all the weight on the best candidate (gaps are >= 1, so 1/100 of a gap)
    cold = softmax_weights(rewards, beta=1e-2)
    assert cold[best] >= 1 - n * math.exp(-100) and effective_sample_size(cold) < 1 + 1e-9
    # beta -> infinity: uniform, every candidate counts (ESS = n)
    hot = softmax_weights(rewards, beta=1e9)
    np.testing.assert_allclose(hot, 1 / n, rtol=1e-6)
    assert effective_sample_size(hot) == pytest.approx(n, rel=1e-9)
    # so the weighted scheme tends to argmax's pick and to plain averaging at the two limits
    scored = pd.DataFrame({"prompt_id": "p", "reward": rewards, "response": list("abcdefgh")[:n]})
    weighted, _ = reweight(scored, "weighted", 1e-2, 1, 0)
    argmax, _ = reweight(scored, "argmax", 1.0, 1, 0)
    heaviest = weighted.loc[weighted["weight"].idxmax(), "response"]
    assert heaviest == argmax["response"].item()
    assert weighted.loc[weighted["weight"].idxmax(), "weight"] == pytest.approx(n)


# -- win-rate statistics --


@FAST
@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_the_wilson_interval_contains_the_rate_and_stays_in_unit_range(case):
    k, n = case
    rate = k / n
    low, high = wilson_interval(rate, n)
    assert 0.0 <= low <= high <= 1.0
    # within rounding: at k = 0 the lower end is 0 only up to ~1e-17 (see docs/reliability.md)
    assert low - 1e-12 <= rate <= high + 1e-12
    if 0 < k < n:  # an interior rate is never a point
        assert low < rate < high


@FAST
@given(st.lists(st.sampled_from([1, 0, -1, None]), max_size=60))
def test_summarize_counts_every_outcome_and_bounds_the_rate(outcomes):
    result = summarize(outcomes)
    assert result.valid + result.failures == len(outcomes)
    if result.valid == 0:
        assert result.win_rate is None and result.ci_low is None
    else:
        # within rounding: at a rate of exactly 0 wilson_interval's lower end comes out ~1e-17
        assert 0 <= result.ci_low <= result.win_rate + 1e-12
        assert result.win_rate - 1e-12 <= result.ci_high <= 1


paired_rewards = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-10, 10) | st.sampled_from([0.0, 1.0]), min_size=n, max_size=n),
        st.lists(st.floats(-10, 10) | st.sampled_from([0.0, 1.0]), min_size=n, max_size=n),
    )
)


@FAST
@given(paired_rewards)
def test_reward_win_rate_is_symmetric(pair):
    a, b = pair
    forward, backward = reward_win_rate(a, b), reward_win_rate(b, a)
    assert forward.win_rate + backward.win_rate == pytest.approx(1.0, abs=1e-12)
    assert (forward.wins, forward.ties, forward.losses) == (
        backward.losses,
        backward.ties,
        backward.wins,
    )
    # the intervals mirror each other too
    assert forward.ci_low == pytest.approx(1 - backward.ci_high, abs=1e-12)
    assert reward_win_rate(a, a).win_rate == 0.5


@FAST
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50),
    st.integers(0, 2**16),
    st.sampled_from([0.8, 0.9, 0.95]),
)
def test_the_paired_bootstrap_interval_contains_the_mean(values, seed, level):
    result = paired_bootstrap(np.array(values), resamples=300, seed=seed, level=level)
    scale = max(1.0, max(abs(v) for v in values))
    tolerance = 1e-9 * scale
    assert result.ci_low - tolerance <= result.mean <= result.ci_high + tolerance
    assert min(values) - tolerance <= result.ci_low and result.ci_high <= max(values) + tolerance
    assert result.prompts == len(values)
