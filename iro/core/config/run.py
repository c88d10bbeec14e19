"""A whole run: its name, seed and iterations, and one field per section."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, model_validator

from iro.core.config.base import Section
from iro.core.config.data import DataConfig
from iro.core.config.errors import ConfigError
from iro.core.config.evaluation import EvalConfig, ReportConfig
from iro.core.config.ivl import IVLConfig
from iro.core.config.policy import PolicyConfig
from iro.core.config.reward import RewardFunctionConfig
from iro.core.config.runtime import RayConfig, StoreConfig
from iro.core.config.search import DecodeConfig, RolloutConfig, SamplingConfig, SearchConfig
from iro.core.config.value import ReweightConfig, ValueModelConfig

# A run's name becomes a directory (runs/<name>/) and part of Prefect names: no separators, no
# dots, nothing that could leave the store (`../x`, `/etc`).
RUN_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"


def check_run_name(name: str) -> str:
    """`name` if it is a valid run name (lowercase letters, digits, dashes), else ConfigError."""
    if not isinstance(name, str) or not re.fullmatch(RUN_NAME_PATTERN, name):
        raise ConfigError(
            f"run name {name!r} is not valid: use lowercase letters, digits and dashes, starting "
            "with a letter or digit (a run name becomes a directory of the store)"
        )
    return name


class RunConfig(Section):
    run_name: str = Field(
        "default",
        pattern=RUN_NAME_PATTERN,
        description="names the run: its records (iteration manifests, evaluation table, reports) "
        "are kept under runs/NAME in the store and its Prefect runs and artifacts carry it. "
        "Artifacts are found by their settings, not by this name, so runs that share settings "
        "share work",
    )
    seed: int = Field(
        0,
        description="seeds everything random: which training prompts each iteration takes, "
        "every sample of the policy, softmax resampling and the value and IVL training; change it "
        "for an independent repeat of the run",
    )
    iterations: Annotated[int, Field(ge=1)] = Field(
        2,
        description="IRO iterations: each samples (iteration 1) or searches (later ones) a fresh "
        "slice of data.prompts_per_iteration training prompts, scores and reweights the "
        "candidates and trains one more value model V_k",
    )
    cache_dir: str | None = Field(None, description="converted models; default ~/.cache/iro")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    reward: RewardFunctionConfig = Field(default_factory=RewardFunctionConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    reweight: ReweightConfig = Field(default_factory=ReweightConfig)
    value: ValueModelConfig = Field(default_factory=ValueModelConfig)
    ivl: IVLConfig = Field(default_factory=IVLConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _a_beta_per_iteration(self) -> RunConfig:
        if isinstance(self.value.beta, list) and len(self.value.beta) < self.iterations:
            raise ValueError(
                f"value.beta lists {len(self.value.beta)} betas for {self.iterations} iterations"
            )
        return self
