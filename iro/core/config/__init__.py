"""The one typed schema for a run config, and the loader that fills it.

Every section forbids unknown keys, so a typo is an error that names the key before any work
starts. Each stage hashes only the settings it reads (see `iro.pipeline.identity`), so changing,
say, the evaluation settings does not invalidate finished rollouts.

One module per group of sections (policy, data, reward, search, value, ivl, evaluation,
runtime), `run` for the whole RunConfig, and `validation` and `loader` for turning YAML and
overrides into one. Import from here: the modules are how the schema is kept, not its interface.
"""

from iro.core.config.base import EMBEDDED_MODEL, ENV_VAR_PATTERN, KEY_PREFIXES, EnvVarName, Section
from iro.core.config.data import DataConfig
from iro.core.config.errors import ConfigError
from iro.core.config.evaluation import EvalConfig, JudgeConfig, ReportConfig
from iro.core.config.ivl import IVLConfig
from iro.core.config.loader import load_config, parse_override, read_yaml, set_dotted_key
from iro.core.config.policy import EndpointConfig, PolicyConfig
from iro.core.config.reward import RewardComponent, RewardFunctionConfig
from iro.core.config.run import RUN_NAME_PATTERN, RunConfig, check_run_name
from iro.core.config.runtime import RayConfig, StoreConfig
from iro.core.config.search import (
    DecodeConfig,
    ImplicitRewardConfig,
    RejectionConfig,
    RolloutConfig,
    SamplingConfig,
    SearchConfig,
)
from iro.core.config.validation import SECRET_HINTS, parse_config
from iro.core.config.value import (
    LoraSettings,
    ReweightConfig,
    TDConfig,
    ValueModelConfig,
    ValueTrainingConfig,
)

__all__ = [
    "EMBEDDED_MODEL",
    "ENV_VAR_PATTERN",
    "KEY_PREFIXES",
    "RUN_NAME_PATTERN",
    "SECRET_HINTS",
    "ConfigError",
    "DataConfig",
    "DecodeConfig",
    "EndpointConfig",
    "EnvVarName",
    "EvalConfig",
    "IVLConfig",
    "ImplicitRewardConfig",
    "JudgeConfig",
    "LoraSettings",
    "PolicyConfig",
    "RayConfig",
    "RejectionConfig",
    "ReportConfig",
    "RewardComponent",
    "RewardFunctionConfig",
    "ReweightConfig",
    "RolloutConfig",
    "RunConfig",
    "SamplingConfig",
    "SearchConfig",
    "Section",
    "StoreConfig",
    "TDConfig",
    "ValueModelConfig",
    "ValueTrainingConfig",
    "check_run_name",
    "load_config",
    "parse_config",
    "parse_override",
    "read_yaml",
    "set_dotted_key",
]
