"""Model shapes without a download: a local config.json, else the catalogue of the paper's
models, else unknown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from iro.core.models import EMBEDDED_PREFIX, default_cache_dir

NOT_FOUND = "no local config.json, not in the hub cache nor in KNOWN_MODELS"


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's dimensions: enough for its parameter count and KV cache."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    gated_mlp: bool  # SwiGLU-style MLP: three matrices instead of two
    tied_embeddings: bool
    head_dim: int | None = None

    @property
    def attention_width(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def params(self, lm_head: bool = True, layers: int | None = None) -> int:
        """Weights of the embedding, `layers` blocks and (when asked, untied) the LM head.
        Norms and biases (<0.1%) are left out."""
        h, d = self.hidden, self.attention_width
        attention = h * d * (2 * self.heads + 2 * self.kv_heads)
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate
        head = self.vocab * h if lm_head and not self.tied_embeddings else 0
        return self.vocab * h + head + (layers or self.layers) * (attention + mlp)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.attention_width * dtype_bytes


# The paper's models (and the embedded default), from their published config.json files, so that
# a plan needs no download. Parameter counts follow from the shapes: Pythia-1B 1.01 B,
# Pythia-6.9B 6.86 B, Llama-3-8B 8.03 B, Llama-3-70B 70.6 B, Mistral-7B 7.24 B.
PYTHIA_1B = Shape(2048, 16, 8, 8, 8192, 50304, gated_mlp=False, tied_embeddings=False)
PYTHIA_6_9B = Shape(4096, 32, 32, 32, 16384, 50432, gated_mlp=False, tied_embeddings=False)
LLAMA_3_8B = Shape(4096, 32, 32, 8, 14336, 128256, gated_mlp=True, tied_embeddings=False)
LLAMA_3_70B = Shape(8192, 80, 64, 8, 28672, 128256, gated_mlp=True, tied_embeddings=False)
MISTRAL_7B = Shape(4096, 32, 32, 8, 14336, 32000, gated_mlp=True, tied_embeddings=False)
SMOLLM2_135M = Shape(576, 30, 9, 3, 1536, 49152, gated_mlp=True, tied_embeddings=True)
KNOWN_MODELS: dict[str, Shape] = {
    "cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr": PYTHIA_1B,
    "cleanrl/EleutherAI_pythia-1b-deduped__reward__tldr": PYTHIA_1B,
    "vwxyzjn/EleutherAI_pythia-1b-deduped__sft__tldr": PYTHIA_1B,
    "vwxyzjn/EleutherAI_pythia-1b-deduped__reward__tldr": PYTHIA_1B,
    "EleutherAI/pythia-1b-deduped": PYTHIA_1B,
    "vwxyzjn/EleutherAI_pythia-6.9b-deduped__sft__tldr": PYTHIA_6_9B,
    "vwxyzjn/EleutherAI_pythia-6.9b-deduped__reward__tldr": PYTHIA_6_9B,
    "meta-llama/Meta-Llama-3-8B-Instruct": LLAMA_3_8B,
    "sfairXC/FsfairX-LLaMA3-RM-v0.1": LLAMA_3_8B,
    "meta-llama/Meta-Llama-3-70B-Instruct": LLAMA_3_70B,
    "SiliangZ/RM_Mistral_sft_init_ultrafeedbck_lr_5e6": MISTRAL_7B,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2_135M,
}
EMBEDDED_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _shape_from_config(config: dict) -> Shape | None:
    """The Shape a transformers config.json describes (a TL;DR reward model's `base_config`
    inside it), or None when it lacks a dimension."""
    config = config.get("base_config", config)

    def first(*keys: str, default: object = None) -> object:
        return next((config[k] for k in keys if config.get(k) is not None), default)

    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer")
    heads = first("num_attention_heads", "n_head")
    vocab = first("vocab_size")
    if not all(isinstance(v, int) for v in (hidden, layers, heads, vocab)):
        return None
    act = str(first("hidden_act", "hidden_activation", "activation_function", default=""))
    return Shape(
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=int(first("num_key_value_heads", default=heads)),
        intermediate=int(first("intermediate_size", "n_inner", default=4 * hidden)),
        vocab=vocab,
        gated_mlp=act in ("silu", "swish") or str(config.get("model_type", "")).startswith("gemma"),
        tied_embeddings=bool(config.get("tie_word_embeddings", True)),
        head_dim=first("head_dim"),
    )


def _hub_cached_config(reference: str) -> Path | None:
    """config.json of a hub id already in the local hub cache (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(reference, "config.json")
    return Path(cached) if isinstance(cached, str) else None


def _local_config(reference: str, cache_dir: str | None) -> Path | None:
    """A config.json on this machine for the reference, if any."""
    if reference.startswith(EMBEDDED_PREFIX):
        name = reference.removeprefix(EMBEDDED_PREFIX)
        path = Path(cache_dir or default_cache_dir()) / "models" / name / "config.json"
        return path if path.is_file() else None
    path = Path(reference).expanduser() / "config.json"
    if path.is_file():
        return path
    if reference.count("/") == 1 and not reference.startswith((".", "/", "~")):
        return _hub_cached_config(reference)
    return None


def find_shape(reference: str, cache_dir: str | None = None) -> tuple[Shape | None, str]:
    """(shape, where it came from): a local config.json, the table, or unknown."""
    config = _local_config(reference, cache_dir)
    if config is not None:
        shape = _shape_from_config(json.loads(config.read_text()))
        return shape, str(config) if shape else f"{config} lacks a dimension"
    known = EMBEDDED_HUB_IDS.get(reference.removeprefix(EMBEDDED_PREFIX), reference)
    if known in KNOWN_MODELS:
        return KNOWN_MODELS[known], "table" if known == reference else f"table ({known})"
    return None, NOT_FOUND
