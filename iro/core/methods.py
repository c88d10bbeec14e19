"""The one table of decoding methods: each name, what it reads, and how it runs.

Every place that names a method goes through this table, so a method has one name and one
meaning everywhere: the config schema (`decode.mode`, `eval.baselines`), `iro decode --mode`,
evaluation and its labels (`iro.pipeline.methods`):

- base: one plain sample from pi_base (w = k = 1, whole responses);
- bon:  best of U = w*k plain samples by the reward (w = 1, k = U, whole responses);
- iro:  value-guided chunk-level beam search with V_1..V_k (w beams, k children, l tokens), plus
        CBS's implicit reward when `search.implicit_reward` names a model pair;
- specrej: early rejection (Speculative Rejection): N samples of l tokens, of which only the
        best keep_fraction of the unfinished by the IRO search's value score continue at each
        chunk; the best finished one by the reward is the answer;
- vas:  token-level value guidance over the top-k next tokens (transformers);
- args: ARGS, top-k next tokens re-scored by logit + w * reward(prefix + token) (transformers);
- ivl:  IVL, the base's logits plus a residual value network learned from demonstrations
        (transformers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

MethodName = Literal["base", "bon", "iro", "specrej", "vas", "args", "ivl"]


@dataclass(frozen=True)
class Method:
    name: str
    runs_on: Literal["search", "token"]  # the configured engine's chunk search, or transformers
    uses_values: bool
    # config keys (dotted; a section stands for all its keys) the method's outputs depend on,
    # beyond what every generation reads (policy, prompts, sampling, seed): see identity.py
    reads: tuple[str, ...]
    uses_residual: bool = False  # reads the IVL residual (the ivl stage's artifact)


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
                "value.score_dtype",
                "value.score_device",  # a GPU's values round differently: other selections
                "decode.final_pick",
            ),
        ),
        Method(
            "specrej",
            "search",
            uses_values=True,
            reads=(
                "search.rejection",
                "search.implicit_reward",
                "value.beta",
                "value.max_length",
                "value.score_dtype",
                "value.score_device",
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
                "value.score_dtype",
            ),
        ),
        Method(
            "args",
            "token",
            uses_values=False,
            reads=("decode.token_top_k", "decode.args_weight", "decode.greedy"),
        ),
        Method(
            "ivl",
            "token",
            uses_values=False,
            reads=("sampling.top_k", "decode.greedy"),
            uses_residual=True,
        ),
    )
}


assert tuple(METHODS) == get_args(MethodName), "MethodName and METHODS must list the same names"


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
