"""The residual value network of Inverse Value Learning (IVL; Lu et al., NAACL 2025).

A small causal LM reads the same text as a frozen base model and outputs residual logits r over
the vocabulary at every position; the aligned policy is the base corrected by them
(`guided_log_probs`). Only the residual is trained (`valuefn.residual_training`), so it can be
added to other bases: ones that share its vocabulary as is, others through `valuefn.vocab_map`.

The network is the (optionally truncated) trunk of a causal-LM checkpoint with a fresh, untied
output layer initialised to zero: the untrained residual is r = 0 and gives back the base's
distribution exactly. A learned scale on the backbone's own LM head would start at no effect
too, but would then grow the residual along the pretrained distribution (sharpening the base)
and only as fast as one scalar moves; a zero head lets every vocabulary entry move at once.

Saved as a self-contained directory (`valuefn.trunk`): config.json (`ResidualConfig`: the trunk's
config, the connection and the head's vocabulary size), model.safetensors (trunk and head) and
the tokenizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import nn
from transformers import initialization as init

from iro.valuefn.trunk import TrunkConfig, TrunkModel, config_setting, pretrained_trunk

if TYPE_CHECKING:
    from iro.valuefn.vocab_map import VocabularyMap

Connection = Literal["logits", "log_probs"]


def residual_delta(residual_logits: torch.Tensor, connection: Connection) -> torch.Tensor:
    """The residual's effect delta: what the norm penalty holds small and what transfer maps.

    logits:     delta = r. Its offset counts: the penalty holds it near 0, so delta = 0 (what a
                token of another vocabulary without a match gets) means "no change".
    log_probs:  delta = log_softmax(r) - mean_a log_softmax(r) = r - mean_a r: the residual as a
                log-distribution, blind to offsets; delta = 0 means "as likely as the residual's
                average token".
    """
    if connection not in get_args(Connection):
        raise ValueError(f"unknown residual connection {connection!r}")
    residual_logits = residual_logits.float()
    if connection == "logits":
        return residual_logits
    return residual_logits - residual_logits.mean(dim=-1, keepdim=True)


def guided_log_probs(
    base_logits: torch.Tensor,
    residual_logits: torch.Tensor,
    connection: Connection,
    vocab_map: VocabularyMap | None = None,
) -> torch.Tensor:
    """log pi(a|s) of the base corrected by the residual, over the last dimension.

        logits:     log pi = log_softmax(base + r)
        log_probs:  log pi = log_softmax(log_softmax(base) + log_softmax(r))

    both computed as log_softmax(base + delta), delta = `residual_delta(r, connection)`. On one
    vocabulary the two are the same distribution (log_softmax only subtracts a constant per row,
    which the outer log_softmax removes); they differ in the penalty on delta during training and
    in transfer, where `vocab_map` carries delta onto the base's vocabulary and tokens without a
    match get delta = 0.
    """
    delta = residual_delta(residual_logits, connection)
    if vocab_map is not None:
        delta = vocab_map.map_delta(delta)
    if delta.shape[-1] != base_logits.shape[-1]:
        raise ValueError(
            f"the residual covers {delta.shape[-1]} tokens and the base {base_logits.shape[-1]}; "
            "pass a VocabularyMap between them"
        )
    return torch.log_softmax(base_logits.float() + delta, dim=-1)


class ResidualConfig(TrunkConfig):
    """What a residual network is besides its weights: the trunk's config, how its output
    corrects the base (`connection`) and the size of the vocabulary it covers (its trunk's own
    unless told)."""

    model_type = "iro_ivl_residual"

    connection: str = "logits"
    vocab_size: int | None = None

    def __post_init__(self, **kwargs) -> None:
        if self.connection not in get_args(Connection):
            raise ValueError(f"unknown residual connection {self.connection!r}")
        super().__post_init__(**kwargs)
        if self.vocab_size is None and self.text_config is not None:
            self.vocab_size = self.text_config.vocab_size


class ResidualValueNetwork(TrunkModel):
    config_class = ResidualConfig
    saved_as = "residual"
    legacy_meta = "residual_model.json"
    legacy_fields = ("connection", "vocab_size")

    def __init__(self, config: ResidualConfig, trunk: nn.Module | None = None):
        super().__init__(config, trunk)
        hidden = self.config.text_config.hidden_size
        self.head = nn.Linear(hidden, config.vocab_size, bias=False)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Only the head is this model's own (the trunk initialises itself): r = 0, so the
        untrained residual changes nothing."""
        if module is self.head:
            init.zeros_(module.weight)

    connection = config_setting("connection", writable=False)

    @property
    def vocab_size(self) -> int:
        return self.head.out_features

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Residual logits r of shape (batch, seq, vocab): entry t adjusts the next token's."""
        hidden = self.trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        return self.head(hidden).float()

    @torch.no_grad()
    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: object | None = None,
    ) -> tuple[torch.Tensor, object]:
        """Read new tokens after `cache` (None: from the start): r at the last one, (batch,
        vocab), and the extended cache. `attention_mask` covers the cached tokens too."""
        out = self.trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        return self.head(out.last_hidden_state[:, -1]).float(), out.past_key_values

    @classmethod
    def from_causal_lm(
        cls,
        path: str,
        num_layers: int | None = None,
        connection: Connection = "logits",
        trust_remote_code: bool = False,
    ) -> ResidualValueNetwork:
        """A zero head on the (optionally truncated) trunk of a causal-LM checkpoint, loaded as
        a value model's is (first `num_layers` layers, float32, safetensors only)."""
        trunk = pretrained_trunk(path, num_layers, trust_remote_code)
        return cls(ResidualConfig(text_config=trunk.config, connection=connection), trunk)
