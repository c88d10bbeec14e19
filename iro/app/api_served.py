"""The models `iro api` serves, and how a request becomes a decode job for one of them.

`--run RUN[@K]` is served as `RUN@K`, pi_base guided by V_1..V_K and by the `--with` runs' value
models, and as `RUN@0`, its base policy. A request is checked here, before it is queued, by the
project's own checks: the config schema for its sampling and search settings,
`AlignedPolicy.guide` for strengths, `check_guides` for what a method needs, `render` for the
prompt's length. A refusal names the request field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from iro.app.api_schema import Alignment, APIError, SamplingRequest
from iro.app.api_worker import DecodeSettings, Job
from iro.core.compat import check_value_models
from iro.core.config import ConfigError, RunConfig
from iro.core.data import DatasetError
from iro.core.engines.factory import get_engine
from iro.core.methods import METHODS, get_method
from iro.core.store.protocol import Store
from iro.pipeline.aligned import AlignedPolicy, load_aligned_policy, parse_run_ref
from iro.pipeline.decoder import check_guides
from iro.pipeline.generation import policy_tokenizer, render
from iro.pipeline.methods import guided_method
from iro.pipeline.scoring import build_run_reward
from iro.valuefn.search import SearchSettings

# The API renders prompts itself (raw text, or messages through the chat template): the policy
# reads exactly what it is given.
RAW_PROMPTS = {"data.prompt_template": "{prompt}", "data.use_chat_template": False}


@dataclass(frozen=True)
class ServedModel:
    id: str
    policy: AlignedPolicy
    guided: bool  # RUN@K; RUN@0, the base policy, has no value models
    overrides: Mapping[str, Any]  # the server's --set, under every request's
    tokenizer: Any  # the policy's: renders chat messages, counts prompt tokens

    @cached_property
    def cfg(self) -> RunConfig:
        return self.policy.run_config(self.overrides)

    @property
    def methods(self) -> list[str]:
        """Those that need value models only when guided; never ivl, as no iteration record
        names an IVL residual."""
        return [
            name
            for name, spec in METHODS.items()
            if not spec.uses_residual and (self.guided or not spec.uses_values)
        ]

    @property
    def default_method(self) -> str:
        return guided_method(self.cfg) if self.guided else "base"

    def card(self) -> dict[str, Any]:
        """Its entry in /v1/models."""
        return {
            "id": self.id,
            "object": "model",
            "created": 0,
            "owned_by": "iro",
            "iro": {"run": self.policy.run, "methods": self.methods, "method": self.default_method},
        }


def load_models(
    store: Store, runs: Sequence[str], with_runs: Sequence[str], overrides: Mapping[str, Any]
) -> dict[str, ServedModel]:
    """Each run's models, with what their decodes read loaded now (the engine, the reward, the
    tokenizer) and their value models checked against the config's backbone."""
    models: dict[str, ServedModel] = {}
    for ref in runs:
        name, iteration = parse_run_ref(ref)
        policy = load_aligned_policy(store, name, iteration, with_runs)
        cfg = policy.run_config(overrides)
        check_value_models(policy.guide()[0], cfg.value.backbone)
        get_engine(cfg.policy, cfg.cache_dir, cfg.seed)  # kept by the factory for every decode
        build_run_reward(cfg)  # kept likewise
        tokenizer = policy_tokenizer(cfg)
        for guided, k in ((True, policy.iteration), (False, 0)):
            model = ServedModel(f"{name}@{k}", policy, guided, dict(overrides), tokenizer)
            models[model.id] = model
    return models


@dataclass(frozen=True)
class Planned:
    job: Job
    method: str
    prompt_tokens: int


def plan(
    model: ServedModel, prompts: Sequence[str], request: SamplingRequest, field: str
) -> Planned:
    """The decode job answering `request` for `prompts` (`field`: where the request holds them),
    or the APIError saying what is wrong with it."""
    alignment = request.alignment or Alignment()
    method = _method(model, alignment.method)
    given = _settings(request, alignment)
    try:
        cfg = model.policy.run_config(
            {**model.overrides, **RAW_PROMPTS, **{key: v for key, _, v in given}}
        )
    except ConfigError as err:
        named = [param for key, param, _ in given if key in str(err)]
        raise APIError(400, str(err), param=named[0] if named else None) from None
    try:
        value_dirs, betas = model.policy.guide(alignment.strengths)
        if not (model.guided and get_method(method).uses_values):
            value_dirs, betas = [], []
        check_guides(cfg, method, value_dirs)
    except ValueError as err:
        raise APIError(400, str(err), param="alignment.strengths") from None
    prompt_tokens = _prompt_tokens(model, cfg, prompts, field)
    settings = DecodeSettings(cfg, method, tuple(value_dirs), tuple(betas) if betas else None)
    rows = [prompt for prompt in prompts for _ in range(request.n)]
    return Planned(Job(settings, rows, request.seed), method, prompt_tokens)


def _method(model: ServedModel, asked: str | None) -> str:
    method = asked or model.default_method
    try:
        spec = get_method(method)
    except ValueError as err:
        raise APIError(400, str(err), param="alignment.method") from None
    if method not in model.methods:
        if spec.uses_values:
            why = "it is the base policy, with no value models"
        else:
            why = "no iteration record names an IVL residual"
        raise APIError(
            400,
            f"model {model.id} cannot serve method {method!r}: {why}; it serves "
            f"{', '.join(model.methods)}",
            param="alignment.method",
        )
    return method


def _settings(request: SamplingRequest, alignment: Alignment) -> list[tuple[str, str, Any]]:
    """(config key, request field, value) for every setting the request gives."""
    given = [
        ("sampling.max_new_tokens", "max_tokens", request.new_tokens()),
        ("sampling.temperature", "temperature", request.temperature),
        ("sampling.top_p", "top_p", request.top_p),
        ("sampling.top_k", "top_k", request.top_k),
        ("sampling.stop", "stop", request.stop_strings()),
        ("search.beams", "alignment.beams", alignment.beams),
        ("search.children", "alignment.children", alignment.children),
        ("search.chunk_tokens", "alignment.chunk_tokens", alignment.chunk_tokens),
        ("decode.final_pick", "alignment.final_pick", alignment.final_pick),
    ]
    if request.temperature == 0:  # token-level methods take the argmax, as the search does
        given.append(("decode.greedy", "temperature", True))
    return [(key, param, value) for key, param, value in given if value is not None]


def _prompt_tokens(model: ServedModel, cfg: RunConfig, prompts: Sequence[str], field: str) -> int:
    """The prompts' length in policy tokens, each checked to leave room for max_tokens."""
    frame = pd.DataFrame({"id": [str(i) for i in range(len(prompts))], "prompt": prompts})
    # the search settings give the length check its max_new_tokens, nothing else
    settings = SearchSettings.best_of_n(1, cfg.sampling.max_new_tokens)
    try:
        _, prompt_ids = render(cfg, model.tokenizer, frame, settings)
    except DatasetError as err:
        raise APIError(400, str(err), param=field, code="context_length_exceeded") from None
    empty = [i for i, ids in enumerate(prompt_ids) if not ids]
    if empty:
        raise APIError(400, f"prompt {empty[0]} is empty", param=field)
    return sum(map(len, prompt_ids))
