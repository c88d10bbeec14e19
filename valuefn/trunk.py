"""A causal-LM trunk under a head of our own, saved and loaded by transformers.

The per-token value model (`valuefn.model`) and IVL's residual network (`valuefn.residual`) are
both the (optionally truncated) trunk of a causal-LM checkpoint with a fresh head. Each is a
`PreTrainedModel` whose config nests the trunk's own config as `text_config` (the name
transformers gives the language part of a composite model) beside the head's settings. So
`save_pretrained` writes config.json and model.safetensors, and `from_pretrained` rebuilds the
trunk from the config on the meta device and fills in the saved weights: no random init that
the checkpoint overwrites, nothing unpickled, no code taken from the directory.

A directory in the older layout (the trunk's config as config.json, the head's settings in a
JSON file of their own, the same weights file) still loads: its config is put together from the
two files and the weights load as from any other directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # whole, or in shards


class TrunkConfig(PretrainedConfig):
    """The trunk's config (`text_config`); subclasses add what their head needs."""

    sub_configs: ClassVar[dict[str, type]] = {"text_config": AutoConfig}

    text_config: dict | PretrainedConfig | None = None

    def __post_init__(self, **kwargs) -> None:
        if isinstance(self.text_config, dict):
            self.text_config = AutoConfig.for_model(**self.text_config)
        if self.text_config is not None:
            # the base class sets this on every sub-config: keep the one the trunk runs with
            kwargs.setdefault("attn_implementation", self.text_config._attn_implementation)
        super().__post_init__(**kwargs)

    def to_diff_dict(self) -> dict[str, Any]:
        """What config.json holds: without the directory the trunk was read from, so that a
        saved model's files do not depend on where its backbone sat on this machine."""
        saved = super().to_diff_dict()
        if isinstance(saved.get("text_config"), dict):
            saved["text_config"].pop("_name_or_path", None)
        return saved


def pretrained_trunk(path: str, num_layers: int | None, trust_remote_code: bool) -> PreTrainedModel:
    """The trunk of a causal-LM checkpoint in float32, its first `num_layers` layers (all: None),
    read from safetensors only."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if num_layers is not None:
        if num_layers > config.num_hidden_layers:
            raise ValueError(
                f"value.num_layers = {num_layers} but {path} has {config.num_hidden_layers}"
            )
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
    return AutoModel.from_pretrained(
        path,
        config=config,
        dtype=torch.float32,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,  # never unpickle weights
    )


def config_setting(name: str, writable: bool = True) -> property:
    """The config's field `name` as an attribute of the model: what training sets on the model
    is what `save_pretrained` writes."""

    def get(model: PreTrainedModel) -> Any:
        return getattr(model.config, name)

    def put(model: PreTrainedModel, value: Any) -> None:
        setattr(model.config, name, value)

    return property(get, put if writable else None)


class TrunkModel(PreTrainedModel):
    """A trunk and, in subclasses, a head; `save` and `load` a directory with its tokenizer."""

    config_class = TrunkConfig
    # the trunk does the attention: whatever it supports, this model does
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    saved_as: ClassVar[str]  # what a directory holds, for error messages
    legacy_meta: ClassVar[str]  # the older layout's JSON file of head settings
    legacy_fields: ClassVar[tuple[str, ...]]  # the config fields that file holds

    def __init__(self, config: TrunkConfig, trunk: PreTrainedModel | None = None):
        super().__init__(config)
        self.trunk = trunk if trunk is not None else AutoModel.from_config(config.text_config)
        self.config.text_config = self.trunk.config  # one object: the trunk reads what is saved

    def save(self, directory: Path, tokenizer) -> None:
        """config.json, model.safetensors and the tokenizer: a directory `load` reads alone."""
        self.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """The model saved in `directory` (either layout), in float32 and eval mode; every weight
        must be there and nothing else."""
        directory = Path(directory)
        model, info = cls.from_pretrained(
            directory,
            config=cls._saved_config(directory),
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            output_loading_info=True,
        )
        mismatch = {k: sorted(v) for k, v in info.items() if v}
        if mismatch:
            raise ValueError(
                f"{directory}: the saved weights do not fit the {cls.saved_as}: {mismatch}"
            )
        _own_memory(model)
        return model

    @classmethod
    def _saved_config(cls, directory: Path) -> TrunkConfig | None:
        """None where config.json is this model's own (from_pretrained reads it); the config of
        the older layout; an error naming what is missing for anything else."""
        if not (directory / CONFIG).is_file():
            raise FileNotFoundError(f"{directory} is not a saved {cls.saved_as} (no {CONFIG})")
        if not any((directory / n).is_file() for n in WEIGHTS):
            raise FileNotFoundError(f"{directory} is not a saved {cls.saved_as} (no {WEIGHTS[0]})")
        model_type = json.loads((directory / CONFIG).read_text()).get("model_type")
        if model_type == cls.config_class.model_type:
            return None
        if not (directory / cls.legacy_meta).is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved {cls.saved_as}: its {CONFIG} describes a "
                f"{model_type!r}, not a {cls.config_class.model_type!r}, and it has no "
                f"{cls.legacy_meta}"
            )
        meta = json.loads((directory / cls.legacy_meta).read_text())
        trunk = AutoConfig.from_pretrained(directory, local_files_only=True)
        settings = {k: meta[k] for k in cls.legacy_fields if k in meta}
        return cls.config_class(text_config=trunk, **settings)


@torch.no_grad()
def _own_memory(model: nn.Module) -> None:
    """Copy memory-mapped weights into memory of their own. A mapped tensor keeps its offset in
    the file, and CPU kernels on such memory can round differently from the model that was
    saved; a copy gives its outputs bit for bit, and frees the mapping."""
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
