"""A per-token value model: a causal-LM trunk with a value head read at every position.

V(x, y<t) is the value of prompt x followed by response prefix y<t, so one forward pass over
(x, y) gives the value of every prefix of y at once. The trunk may keep only its first N layers
so that training and scoring fit a CPU budget. Two heads:

- scalar: V(text up to token t) = head(h_t), read at the token's own hidden state;
- vocabulary: a Linear(hidden, vocab) read at the *previous* state, V(s∘a) = head(h_s)[a], so one
  pass at state s values every next token a at once (token-level guidance then needs one value
  forward per step instead of one per candidate).

Either head predicts a standardised value: V = target_mean + target_scale * head(...), with the
mean and scale of the training targets set before training. Rewards then need no particular
range, and a fresh head starts at the targets' mean instead of at zero (a value model that cannot
even fit a constant cannot guide a search).

With a prior ("reward"), the network is the residual on top of the run's reward read on the
prefix; the model records that it needs one, and the scorer adds it (`valuefn.scoring`).

Saved as a self-contained directory (`valuefn.trunk`): config.json (`TokenValueConfig`: the
trunk's config, the head's kind, its target statistics and the prior), model.safetensors (trunk
and head) and the tokenizer.

Training may put LoRA adapters on the trunk (`add_lora`); they are merged into its weights
(`merge_lora`) before it is saved, so a saved model never holds adapters and loads as any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import initialization as init

from iro.valuefn.encoding import right_pad
from iro.valuefn.kv_cache import CachedRows, ResponseKV, batch_past, cached_forward
from iro.valuefn.trunk import TrunkConfig, TrunkModel, config_setting, pretrained_trunk

HEADS = ("scalar", "vocabulary")


def _last_hidden(out) -> torch.Tensor:
    return out.last_hidden_state[:, -1]


def _previous_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """For each position t, the hidden state of the last earlier position t attends to.

    That is t - 1 in a plain row, the last prompt token for the first token of a packed response
    (4-d mask), and none for a row's first real token, which gets a zero state.
    """
    seq = hidden.shape[1]
    if attention_mask.ndim == 4:
        visible = attention_mask[:, 0].bool()
    else:
        visible = attention_mask.bool()[:, None, :].expand(-1, seq, -1)
    earlier = visible & torch.ones(seq, seq, dtype=torch.bool, device=hidden.device).tril(-1)
    parent = (earlier * torch.arange(1, seq + 1, device=hidden.device)).amax(-1) - 1
    gathered = hidden.gather(1, parent.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1]))
    return gathered * (parent >= 0)[..., None]


@dataclass(frozen=True)
class LoraSpec:
    """Low-rank adapters for the trunk's linear layers named in `target_modules` (a module's
    name or its last dotted parts, as peft matches them; value.lora in a run's config)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def _unmatched_targets(linear: Sequence[str], targets: Sequence[str]) -> list[str]:
    """The names in `targets` that match none of the `linear` layer names, as peft matches them.

    peft only refuses a list that matches nothing at all; a misspelt name next to valid ones
    would silently train fewer adapters than asked for.
    """
    return [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in linear)]


class TokenValueConfig(TrunkConfig):
    """What a value model is besides its weights: the trunk's config, the head's kind, the
    training targets' mean and spread, and its prior ("reward": values are residuals on the
    reward of the prefix; None: plain values)."""

    model_type = "iro_token_value"

    head: str = "scalar"
    target_mean: float = 0.0
    target_scale: float = 1.0
    prior: str | None = None

    def __post_init__(self, **kwargs) -> None:
        if self.head not in HEADS:
            raise ValueError(f"value head must be one of {HEADS}, got {self.head!r}")
        super().__post_init__(**kwargs)


class TokenValueModel(TrunkModel):
    config_class = TokenValueConfig
    saved_as = "value model"
    legacy_meta = "value_model.json"
    legacy_fields = ("head", "target_mean", "target_scale", "prior")

    def __init__(self, config: TokenValueConfig, trunk: nn.Module | None = None):
        super().__init__(config, trunk)
        trunk_config = self.config.text_config
        outputs = 1 if config.head == "scalar" else trunk_config.vocab_size
        self.value_head = nn.Linear(trunk_config.hidden_size, outputs)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Only the head is this model's own (the trunk initialises itself). Every vocabulary
        row starts as the same scalar-style head: a fresh V(s∘a) is the scalar head's V(s) for
        every a (standardised, near 0), so fresh guidance shifts nothing."""
        if module is self.value_head:
            hidden = module.in_features
            row = init.normal_(torch.empty(1, hidden), std=1.0 / (hidden + 1))
            init.copy_(module.weight, row.expand_as(module.weight))
            init.zeros_(module.bias)

    @classmethod
    def on_trunk(cls, trunk: nn.Module, head: str = "scalar") -> TokenValueModel:
        """A fresh `head` on `trunk`, whose weights are kept."""
        return cls(TokenValueConfig(text_config=trunk.config, head=head), trunk)

    head = config_setting("head", writable=False)
    target_mean = config_setting("target_mean")
    target_scale = config_setting("target_scale")
    prior = config_setting("prior")

    def add_lora(self, spec: LoraSpec) -> None:
        """Wrap the trunk's target layers in LoRA adapters and freeze the rest of the trunk; the
        head stays trainable in full. Fresh adapters change no output (peft starts B at zero)."""
        from peft import LoraConfig, get_peft_model

        linear = [n for n, m in self.trunk.named_modules() if isinstance(m, nn.Linear)]
        missing = _unmatched_targets(linear, spec.target_modules)
        if missing:
            layers = sorted({n.rsplit(".", 1)[-1] for n in linear})
            raise ValueError(
                f"value.lora.target_modules: {missing} name no linear layer of the value trunk "
                f"(its linear layers: {layers})"
            )
        config = LoraConfig(
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=list(spec.target_modules),
            bias="none",
        )
        self.trunk = get_peft_model(self.trunk, config)

    def merge_lora(self) -> None:
        """Fold trained adapters into the trunk's weights, back to the plain trunk (whose
        parameters all train again), so `save` writes the usual layout; no-op without them."""
        from peft import PeftModel

        if isinstance(self.trunk, PeftModel):
            self.trunk = self.trunk.merge_and_unload()
            self.trunk.requires_grad_(True)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Recompute the trunk's layer activations in the backward pass instead of keeping them:
        the trainer calls this on the model it trains when `gradient_checkpointing` is set."""
        self.trunk.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.trunk.gradient_checkpointing_disable()

    def _in_target_units(self, standardised: torch.Tensor) -> torch.Tensor:
        return self.target_mean + self.target_scale * standardised.float()

    def next_token_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """States s (..., hidden) -> (..., vocab): entry a is V(s∘a). Vocabulary head only."""
        if self.head != "vocabulary":
            raise ValueError("next_token_values needs a vocabulary value head")
        return self._in_target_units(self.value_head(hidden))

    def token_values(self, previous: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """V(s∘a) = head(h_s)[a] for states (..., hidden) and tokens (...), vocabulary head only.

        Equal to gathering `next_token_values`, but reads only the head's rows for the given
        tokens, never the (..., vocab) output (training reads every position).
        """
        if self.head != "vocabulary":
            raise ValueError("token_values needs a vocabulary value head")
        rows = self.value_head.weight[token_ids]
        return self._in_target_units((previous * rows).sum(-1) + self.value_head.bias[token_ids])

    def read_values(
        self, hidden: torch.Tensor, previous: torch.Tensor, token_ids: torch.Tensor
    ) -> torch.Tensor:
        """Values (...) of the texts ending at each token, given its own hidden state (...,
        hidden), the previous state and the token ids (...)."""
        if self.head == "vocabulary":
            return self.token_values(previous, token_ids)
        return self._in_target_units(self.value_head(hidden).squeeze(-1))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Values of shape (batch, seq): entry t is V of the text up to and including token t.

        `attention_mask` is the usual (batch, seq) padding mask, or a (batch, 1, seq, seq) boolean
        mask of what each position may attend to (several responses packed after one prompt).
        The vocabulary head reads entry t as head(h_parent)[token_t], the parent being the last
        earlier position t attends to; a row's first token has none and reads a zero state,
        target_mean + target_scale * bias[token] (training never reads it: states start at the
        last prompt token).
        """
        if attention_mask.ndim == 4 and self.config.text_config._attn_implementation != "sdpa":
            raise ValueError("a boolean (batch, 1, seq, seq) attention mask needs sdpa attention")
        hidden = self.trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        previous = _previous_states(hidden, attention_mask) if self.head == "vocabulary" else hidden
        return self.read_values(hidden, previous, input_ids)

    @torch.no_grad()
    def prefill(
        self, prompts: Sequence[Sequence[int]], pad: int = 0
    ) -> tuple[CachedRows, torch.Tensor]:
        """Read prompts once (left-padded): their cache (for `extend`, `advance`,
        `candidate_values`) and V at each last token (the empty response), shape (rows,)."""
        cached, out = CachedRows.read(self.trunk, prompts, pad, _last_hidden)
        window = out.last_hidden_state[:, -2:]  # a last token's previous state is in the window
        previous = _previous_states(window, cached.mask[:, -2:].to(window.device))[:, -1]
        last_tokens = torch.tensor([p[-1] for p in prompts], device=window.device)
        return cached, self.read_values(window[:, -1], previous, last_tokens)

    @torch.no_grad()
    def extend(
        self, cached: CachedRows, response_ids: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        """Values over right-padded response tokens continuing the cached rows, n rows each.

        The cache is copied and repeated, so a prompt is read once however many candidates
        continue it; returns (batch, response_len) like `forward`.
        """
        n, rest = divmod(response_ids.shape[0], cached.mask.shape[0])
        if rest:
            raise ValueError(f"{response_ids.shape[0]} responses for {cached.mask.shape[0]} rows")
        rows = cached.repeated(n)
        mask = torch.cat([rows.mask, response_mask.to(rows.mask.dtype)], dim=1)
        hidden = cached_forward(self.trunk, response_ids, mask, rows.kv).last_hidden_state
        previous = torch.cat([rows.last[:, None], hidden[:, :-1]], dim=1)
        return self.read_values(hidden, previous, response_ids)

    @torch.no_grad()
    def continue_responses(
        self,
        prompts: Sequence[CachedRows],
        reused: Sequence[ResponseKV],
        new_ids: Sequence[Sequence[int]],
        pad: int = 0,
    ) -> tuple[list[float], list[ResponseKV]]:
        """Values of responses that continue states already read, only their new tokens read.

        Row i is prompt i (a cached single row, `prefill`), the response tokens of `reused[i]`
        (possibly none) and `new_ids[i]` (at least one token). Returns each row's value (of the
        text up to its last token) and the states of its whole response, for the rows that will
        continue it. Each row's past is right-padded and the holes masked; positions count real
        tokens only, so a row reads exactly what it would alone.
        """
        if any(not ids for ids in new_ids):
            raise ValueError("every continued response needs at least one new token")
        past_lengths = [p.mask.shape[1] + len(r) for p, r in zip(prompts, reused, strict=True)]
        width = max(past_lengths)
        window = getattr(self.config.text_config, "sliding_window", None)
        longest = width + max(map(len, new_ids))
        if window and longest > window:
            # padded rows place tokens further apart than their positions; within one window
            # that changes nothing, beyond it a sliding-window layer would drop the wrong tokens
            raise ValueError(
                f"value scoring reads rows of up to {longest} cached "
                f"tokens, beyond the value trunk's sliding window ({window}): lower "
                "value.max_length below half the window"
            )
        kv = batch_past(prompts, reused, width)
        past_mask = (torch.arange(width) < torch.tensor(past_lengths)[:, None]).long()
        ids, new_mask = right_pad(new_ids, pad)
        hidden = cached_forward(
            self.trunk, ids, torch.cat([past_mask, new_mask], dim=1), kv
        ).last_hidden_state
        ids = ids.to(hidden.device)
        first_previous = torch.stack(
            [r.hidden[-1] if len(r) else p.last[0] for p, r in zip(prompts, reused, strict=True)]
        ).to(hidden.dtype)
        values = self.read_values(
            hidden, torch.cat([first_previous[:, None], hidden[:, :-1]], dim=1), ids
        )
        lengths = torch.tensor([len(row) for row in new_ids])
        states = [  # a row's new tokens are the cache's columns after the padded past
            r.followed_by(kv, i, slice(width, width + len(row)), hidden[i, : len(row)])
            for i, (r, row) in enumerate(zip(reused, new_ids, strict=True))
        ]
        return values[torch.arange(len(new_ids)), lengths - 1].tolist(), states

    @torch.no_grad()
    def candidate_values(self, cached: CachedRows, candidates: torch.Tensor) -> torch.Tensor:
        """V(s∘a) for candidate next tokens (rows, k) of each cached row: read from the cached
        last state with a vocabulary head (no trunk pass), by `extend` on k one-token rows each
        with a scalar head."""
        if self.head == "vocabulary":
            return self.token_values(cached.last[:, None], candidates)
        flat = candidates.reshape(-1, 1)
        return self.extend(cached, flat, torch.ones_like(flat)).view(candidates.shape)

    @torch.no_grad()
    def advance(self, cached: CachedRows, token_ids: torch.Tensor) -> CachedRows:
        """Append one token (rows,) to each cached row, in place (decoding moves one step)."""
        return cached.advanced(self.trunk, token_ids, _last_hidden)

    @classmethod
    def from_causal_lm(
        cls,
        path: str,
        num_layers: int | None = None,
        trust_remote_code: bool = False,
        head: str = "scalar",
    ) -> TokenValueModel:
        """A fresh value head on the (optionally truncated) trunk of a causal LM checkpoint."""
        return cls.on_trunk(pretrained_trunk(path, num_layers, trust_remote_code), head)
