"""A per-token value model: a causal-LM trunk with a scalar head read at every position.

V(x, y<t) is the head's output at the last token of prompt x followed by response prefix y<t,
so one forward pass over (x, y) gives the value of every prefix of y at once. The trunk may keep
only its first N layers so that training and scoring fit a CPU budget.

The head predicts a standardised value: V = target_mean + target_scale * head(h), with the mean
and scale of the training targets set before training. Rewards then need no particular range, and
a fresh head starts at the targets' mean instead of at zero (a value model that cannot even fit a
constant cannot guide a search).

With a prior ("reward"), the network is the residual on top of the run's reward read on the
prefix; the model records that it needs one, and the scorer adds it (`valuefn.scoring`).

Saved as a self-contained directory: config.json (the trunk's config), model.safetensors (trunk
and head), the tokenizer, and value_model.json (the head and its target statistics).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from iro.base.fsutil import atomic_write_json

VALUE_META = "value_model.json"
WEIGHTS = "model.safetensors"


class TokenValueModel(nn.Module):
    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.config = trunk.config
        self.value_head = nn.Linear(trunk.config.hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / (trunk.config.hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)
        self.target_mean = 0.0
        self.target_scale = 1.0
        self.prior: str | None = None  # "reward": values are residuals on the reward of the prefix

    def read_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., hidden) -> values (...) in the targets' units."""
        return self.target_mean + self.target_scale * self.value_head(hidden).squeeze(-1).float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Values of shape (batch, seq): entry t is V of the text up to and including token t.

        `attention_mask` is the usual (batch, seq) padding mask, or a (batch, 1, seq, seq) boolean
        mask of what each position may attend to (several responses packed after one prompt).
        """
        if attention_mask.ndim == 4 and self.config._attn_implementation != "sdpa":
            raise ValueError("a boolean (batch, 1, seq, seq) attention mask needs sdpa attention")
        hidden = self.trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        return self.read_values(hidden)

    @torch.no_grad()
    def prefill(self, prompt_ids: list[int]) -> tuple[object, float]:
        """Run a prompt once: its KV cache (for `extend`) and V at its last token (empty response)."""
        ids = torch.tensor([prompt_ids])
        out = self.trunk(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        last_value = self.read_values(out.last_hidden_state[0, -1]).item()
        return out.past_key_values, last_value

    @torch.no_grad()
    def extend(
        self, prompt_cache, prompt_len: int, response_ids: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        """Values over right-padded response tokens that all continue one cached prompt.

        The prompt cache is copied and repeated per row, so the prompt is read once however many
        candidates continue it; returns (batch, response_len) like `forward`.
        """
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(response_ids.shape[0])
        prompt_mask = torch.ones((response_ids.shape[0], prompt_len), dtype=response_mask.dtype)
        out = self.trunk(
            input_ids=response_ids,
            attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
            past_key_values=cache,
            use_cache=True,
        )
        return self.read_values(out.last_hidden_state)

    @torch.no_grad()
    def advance(self, cache, token_id: int) -> object:
        """Append one token to a batch-1 cache in place (token-level decoding moves one step)."""
        ids = torch.tensor([[token_id]])
        mask = torch.ones((1, cache.get_seq_length() + 1), dtype=torch.long)
        return self.trunk(
            input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True
        ).past_key_values

    @classmethod
    def from_causal_lm(
        cls, path: str, num_layers: int | None = None, trust_remote_code: bool = False
    ) -> TokenValueModel:
        """A fresh value head on the (optionally truncated) trunk of a causal LM checkpoint."""
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if num_layers is not None:
            if num_layers > config.num_hidden_layers:
                raise ValueError(
                    f"value.num_layers = {num_layers} but {path} has {config.num_hidden_layers}"
                )
            config.num_hidden_layers = num_layers
            if getattr(config, "layer_types", None):
                config.layer_types = config.layer_types[:num_layers]
        trunk = AutoModel.from_pretrained(
            path,
            config=config,
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,  # never unpickle weights
        )
        return cls(trunk)

    def save(self, directory: Path, tokenizer) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS)
        atomic_write_json(
            directory / VALUE_META,
            {
                "kind": "token_value_model",
                "hidden_size": self.config.hidden_size,
                "target_mean": self.target_mean,
                "target_scale": self.target_scale,
                "prior": self.prior,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> TokenValueModel:
        from transformers import AutoConfig, AutoModel

        directory = Path(directory)
        meta_path = directory / VALUE_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} is not a saved value model (no {VALUE_META})")
        meta = json.loads(meta_path.read_text())
        trunk = AutoModel.from_config(AutoConfig.from_pretrained(directory))
        model = cls(trunk)
        model.load_state_dict(load_file(directory / WEIGHTS))
        model.target_mean = float(meta.get("target_mean", 0.0))
        model.target_scale = float(meta.get("target_scale", 1.0))
        model.prior = meta.get("prior")
        return model
