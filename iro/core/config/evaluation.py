"""What a run evaluates on held-out prompts and how its win-rate reports are judged."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from iro.core.config.base import EnvVarName, Section
from iro.core.methods import METHODS, MethodName


class EvalConfig(Section):
    """What a run evaluates on the held-out prompts (data.eval_split, the first
    data.eval_prompts): the baselines once, and the value-guided method after every iteration."""

    enabled: bool = Field(
        True,
        description="false: a run evaluates nothing and reads no held-out prompts: no baselines "
        "and no evaluation after an iteration, so nothing for a report to compare",
    )
    baselines: list[MethodName] = Field(
        default_factory=lambda: ["base", "bon"],
        description="methods that need no value model: base (one sample), bon (best of U = w*k), "
        "args (ARGS with the run's reward)",
    )

    @model_validator(mode="after")
    def _baselines_need_no_values(self) -> EvalConfig:
        guided = [m for m in self.baselines if METHODS[m].uses_values]
        if guided:
            raise ValueError(f"{guided} need value models: they are evaluated per iteration")
        if "ivl" in self.baselines:
            raise ValueError("ivl needs its residual: `iro ivl` trains and evaluates it")
        return self


class JudgeConfig(Section):
    """An OpenAI-compatible judge; its key comes from the environment or a Prefect Secret."""

    model: str = Field(
        "gpt-4o-mini",
        description="the judge model, as the endpoint names it (pairwise judge and alpaca-eval)",
    )
    base_url: str | None = Field(None, description="null: the OpenAI API; else any compatible URL")
    api_key_env: EnvVarName = Field(
        "OPENAI_API_KEY",
        description="environment variable holding the judge's key (the variable's name, never "
        "the key), read unless api_key_secret gives one",
    )
    api_key_secret: str | None = Field(None, description="Prefect Secret block holding the key")
    max_tokens: int = Field(
        256,
        ge=1,
        description="longest answer the pairwise judge may write, in tokens; one cut before its "
        "verdict counts as unparsable",
    )
    max_retries: int = Field(
        3,
        ge=0,
        description="retries of a failed judge request before it counts as a failure in the report",
    )
    concurrency: int = Field(4, ge=1, description="judge requests in flight at once")
    constrain_format: bool = Field(
        False, description="vLLM servers: force the verdict format (structured outputs)"
    )


class ReportConfig(Section):
    """Win-rate reports of a run's evaluation outputs against one baseline (`iro report`)."""

    baseline: str = Field("reference", description="reference, or a method: base, bon-4, iro-iter1")
    methods: list[str] | None = Field(None, description="null: every evaluated method")
    reward_winrate: bool = Field(
        True,
        description="win rate by the run's reward, prompt by prompt (a tie counts half); needs "
        "no judge",
    )
    pairwise_judge: Literal["summary", "dialogue"] | None = Field(None, description="null: off")
    alpaca_eval: bool = Field(
        False,
        description="also judge each method against the baseline with the alpaca-eval package "
        "and report.judge (a judge key is needed)",
    )
    max_prompts: int | None = Field(None, ge=1, description="judge only the first N (cost cap)")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
