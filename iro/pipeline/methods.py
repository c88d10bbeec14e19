"""What each method of `iro.core.methods.METHODS` means for the search: its settings, its U,
its label in tables and reports.
"""

from __future__ import annotations

from typing import Any

from iro.core.config import RunConfig, check_run_name, load_config
from iro.core.engines.base import SamplingSettings
from iro.core.methods import get_method
from iro.valuefn.search import SearchSettings


def search_settings(cfg: RunConfig, method: str) -> SearchSettings:
    """The chunk-search settings that realise a search method (base, bon, iro, specrej)."""
    stop = tuple(cfg.sampling.stop or ())
    max_new = cfg.sampling.max_new_tokens
    if method == "base":
        return SearchSettings.best_of_n(1, max_new, stop)
    if method == "bon":
        return SearchSettings.best_of_n(cfg.search.budget_u, max_new, stop)
    if method == "iro":
        s = cfg.search
        return SearchSettings(s.beams, s.children, s.chunk_tokens, max_new, s.selection, stop)
    if method == "specrej":
        r = cfg.search.rejection
        return SearchSettings.early_rejection(
            r.samples, r.chunk_tokens, r.keep_fraction, max_new, stop
        )
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


# What makes a run VAS (the `vas` flow, `iro vas`): one iteration of the same stages, the value
# trained on TD(lambda) returns as a whole value (no reward prior), evaluated token by token.
# A user's overrides still win (two iterations give iterated VAS).
VAS_RUN_SETTINGS: dict[str, object] = {
    "iterations": 1,
    "decode.mode": "vas",
    "value.target": "td_lambda",
    "value.prior": "none",
}


def method_run_config(
    path: str, run_name: str | None, overrides: dict[str, Any] | None, method: str
) -> RunConfig:
    """The config of a run of `method` (run: IRO; vas: `VAS_RUN_SETTINGS` under `overrides`;
    ivl), named `run_name` if given, else for vas and ivl the config's run name with
    `-<method>`, so that a method's run records do not mix with the IRO run of the config."""
    settings = {**(VAS_RUN_SETTINGS if method == "vas" else {}), **(overrides or {})}
    if run_name:
        settings["run_name"] = run_name
    cfg = load_config(path, settings)
    if run_name or method == "run":
        return cfg
    return cfg.model_copy(update={"run_name": check_run_name(f"{cfg.run_name}-{method}")})


def guided_method(cfg: RunConfig) -> str:
    """The value-guided method of a run's aligned policy, the one each iteration is evaluated
    with: decode.mode where it reads value models (iro, or vas for a VAS run), else iro."""
    mode = cfg.decode.mode
    return mode if get_method(mode).uses_values else "iro"


def method_label(method: str, cfg: RunConfig, iteration: int | None = None) -> str:
    """The name a method's results carry in tables and reports: base, bon-4, iro-iter2, args."""
    if method == "bon":
        return f"bon-{cfg.search.budget_u}"
    if get_method(method).uses_values:
        if iteration is None:
            raise ValueError(f"method {method!r} needs the iteration of its value models")
        return f"{method}-iter{iteration}"
    return method
