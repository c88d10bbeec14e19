"""The one table of decoding methods: what each name means, which settings it reads, how it runs.

Every place that names a method (evaluation, `iro decode`, the CLI's choices, the config schema's
`decode.mode` and `eval.baselines`, report labels) goes through this table, so a method has one
name and one meaning everywhere:

- base: one plain sample from pi_base (w = k = 1, whole responses);
- bon:  best of U = w*k plain samples by the reward (w = 1, k = U, whole responses);
- iro:  value-guided chunk-level beam search with V_1..V_k (w beams, k children, l tokens), plus
        CBS's implicit reward when `search.implicit_reward` names a model pair;
- vas:  token-level value guidance over the top-k next tokens (transformers);
- args: ARGS, top-k next tokens re-scored by logit + w * reward(prefix + token) (transformers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iro.base.config import RunConfig
from iro.base.engines.base import SamplingSettings
from valuefn.search import SearchSettings


@dataclass(frozen=True)
class Method:
    name: str
    runs_on: Literal["search", "token"]  # the configured engine's chunk search, or transformers
    uses_values: bool
    # config keys (dotted; a section stands for all its keys) the method's outputs depend on,
    # beyond what every generation reads (policy, prompts, sampling, seed): see identity.py
    reads: tuple[str, ...]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("base", "search", uses_values=False, reads=()),
        Method("bon", "search", uses_values=False, reads=("search.beams", "search.children")),
        Method(
            "iro",
            "search",
            uses_values=True,
            reads=(
                "search.beams",
                "search.children",
                "search.chunk_tokens",
                "search.selection",
                "search.implicit_reward",
                "value.beta",
                "value.max_length",
                "decode.final_pick",
            ),
        ),
        Method(
            "vas",
            "token",
            uses_values=True,
            reads=(
                "decode.token_top_k",
                "decode.guidance_beta",
                "decode.greedy",
                "value.beta",
                "value.max_length",
            ),
        ),
        Method(
            "args",
            "token",
            uses_values=False,
            reads=("decode.token_top_k", "decode.args_weight", "decode.greedy"),
        ),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def search_settings(cfg: RunConfig, method: str) -> SearchSettings:
    """The chunk-search settings that realise a search method (base, bon, iro)."""
    stop = tuple(cfg.sampling.stop or ())
    max_new = cfg.sampling.max_new_tokens
    if method == "base":
        return SearchSettings.best_of_n(1, max_new, stop)
    if method == "bon":
        return SearchSettings.best_of_n(cfg.search.budget_u, max_new, stop)
    if method == "iro":
        s = cfg.search
        return SearchSettings(s.beams, s.children, s.chunk_tokens, max_new, s.selection, stop)
    raise ValueError(f"method {method!r} does not run through the chunk search")


def rollout_settings(cfg: RunConfig, iteration: int) -> SearchSettings:
    """Iteration 1 draws N plain samples per prompt from pi_base; later ones run the IRO search."""
    if iteration == 1:
        stop = tuple(cfg.sampling.stop or ())
        return SearchSettings.best_of_n(cfg.rollout.samples, cfg.sampling.max_new_tokens, stop)
    return search_settings(cfg, "iro")


def samples_per_prompt(cfg: RunConfig, method: str) -> int:
    """U: policy samples a method draws per prompt (token-level methods draw one response)."""
    if get_method(method).runs_on == "token":
        return 1
    settings = search_settings(cfg, method)
    return settings.beams * settings.children


def sampling_settings(cfg: RunConfig) -> SamplingSettings:
    s = cfg.sampling
    return SamplingSettings(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)


def method_label(method: str, cfg: RunConfig, iteration: int | None = None) -> str:
    """The name a method's results carry in tables and reports: base, bon-4, iro-iter2, args."""
    if method == "bon":
        return f"bon-{cfg.search.budget_u}"
    if get_method(method).uses_values:
        if iteration is None:
            raise ValueError(f"method {method!r} needs the iteration of its value models")
        return f"{method}-iter{iteration}"
    return method
