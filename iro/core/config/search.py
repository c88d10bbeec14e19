"""How responses are produced: sampling, plain rollouts, the chunk-level search and decoding."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from iro.core.config.base import Section
from iro.core.methods import MethodName


class SamplingConfig(Section):
    """How the policy samples its tokens, in rollouts, the search, evaluation and `iro decode`."""

    temperature: float = Field(
        0.7,
        ge=0,
        description="divides the policy's logits before sampling: lower gives likelier, less "
        "varied responses; 0: greedy (the most likely token)",
    )
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="nucleus sampling: draw only from the likeliest tokens whose probabilities "
        "add up to top_p; 1: off. Token-level methods (vas, args, ivl) ignore it",
    )
    top_k: int = Field(
        50,
        ge=-1,
        description="draw only from the k likeliest tokens; -1 or 0: no limit. vas and args use "
        "decode.token_top_k instead",
    )
    max_new_tokens: int = Field(
        48,
        ge=1,
        description="longest response, in policy tokens; one that reaches it without ending is "
        "cut there",
    )
    stop: list[str] | None = Field(None, description="end a response at any of these strings")


class RolloutConfig(Section):
    """Iteration 1 samples plainly from pi_base; later iterations run the guided search."""

    samples: int = Field(4, ge=1, description="N plain samples per prompt in iteration 1")


class ImplicitRewardConfig(Section):
    """CBS's implicit reward log pi_tuned - log pi_untuned, added to the search score / beta."""

    tuned: str = Field(
        ...,
        description="the tuned model of the pair: embedded:NAME, a local checkpoint dir or a hub "
        "id; its tokenizer reads the texts",
    )
    untuned: str = Field(
        ...,
        description="the model it was tuned from, named the same ways; it must share the tuned "
        "model's vocabulary",
    )
    beta: float = Field(
        1.0,
        gt=0,
        description="the implicit reward enters the score divided by beta: larger weighs it less",
    )


class RejectionConfig(Section):
    """specrej (early rejection): N samples of l tokens; at each chunk boundary only the best
    keep_fraction of the unfinished ones, by the IRO search's value score, continue."""

    samples: int = Field(16, ge=1, description="N samples started per prompt")
    keep_fraction: float = Field(
        0.5, gt=0, le=1, description="share of the unfinished samples continued at each chunk"
    )
    chunk_tokens: int = Field(8, ge=1, description="l: tokens between two rejections")


class SearchConfig(Section):
    """Chunk-level beam search: w beams, k continuations of l tokens each (l=None: to the end)."""

    beams: int = Field(2, ge=1, description="w")
    children: int = Field(2, ge=1, description="k")
    chunk_tokens: int | None = Field(8, ge=1, description="l; null means whole responses")
    selection: Literal["diversity_first", "top_w"] = Field(
        "diversity_first",
        description="which w candidates continue after each chunk: top_w, the w best scores; "
        "diversity_first, the best distinct texts first and repeated texts only where too few "
        "distinct ones remain",
    )
    max_candidates: int = Field(256, ge=1, description="upper bound on w*k")
    implicit_reward: ImplicitRewardConfig | None = None
    rejection: RejectionConfig = Field(default_factory=RejectionConfig)

    @model_validator(mode="after")
    def _check_budget(self) -> SearchConfig:
        if self.beams * self.children > self.max_candidates:
            raise ValueError(
                f"beams*children = {self.beams * self.children} exceeds max_candidates = "
                f"{self.max_candidates}"
            )
        return self

    @property
    def budget_u(self) -> int:
        """U = w*k: samples per prompt of one search, the compute measure of docs/method.md."""
        return self.beams * self.children


class DecodeConfig(Section):
    """How `iro decode` (and evaluation of a mode) turns a prompt into one response."""

    mode: MethodName = Field(
        "iro", description="the method `iro decode` runs (iro/core/methods.py)"
    )
    final_pick: Literal["reward", "value"] = Field(
        "reward", description="iro: best of the final candidates by reward, or top value"
    )
    token_top_k: int = Field(10, ge=1, description="vas/args: candidates per token")
    guidance_beta: float = Field(1.0, ge=0, description="vas: logit shift beta * (V - mean V)")
    args_weight: float = Field(1.0, ge=0, description="args: logit + w * reward(prefix + token)")
    greedy: bool = Field(False, description="vas/args: argmax instead of sampling")
