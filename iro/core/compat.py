"""Whether a run's inputs fit it: saved value models (read from their files) and, before any
work starts, its models and prompts (`check_run_inputs`).

A value model directory (`<store>/value/<id>/value_model/`, written by `valuefn.model`) holds
config.json (model_type iro_token_value: the trunk's config under text_config, beside the head's
settings; in the older layout the trunk's own config.json and value_model.json) and its
tokenizer; the artifact's manifest.json one level up records the config slice that trained it
(value.backbone, value.num_layers, ...). A value model copied from another run, or named by hand,
may have been trained on another backbone or read text with another tokenizer: its scores would
then mean nothing to this run, and continuing to train it (value.init_from_previous) would mix
two models. `check_value_models` says so before any of it is loaded, naming the directory, what
differs and how to fix it.

The value-model checks read only files (no torch, no transformers), so they are cheap; callers are the guided search and `iro decode` (all value models of one policy) and value
training (the model V_k starts from).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iro.core.config import RunConfig
from iro.core.data import check_prompt_counts
from iro.core.models import check_model_reference

VALUE_MODEL_TYPE = "iro_token_value"  # valuefn.model.TokenValueConfig.model_type
LEGACY_META = "value_model.json"  # valuefn.model.TokenValueModel.legacy_meta (older layout)
VALUE_KIND = "token_value_model"
MANIFEST = "manifest.json"  # iro.core.store.local.MANIFEST


class IncompatibleValueModelError(ValueError):
    """A value model that cannot be used with the others or with this run's config."""


@dataclass(frozen=True)
class ValueModelInfo:
    """What a saved value model's files say about it."""

    directory: Path
    backbone: str | None  # value.backbone of the run that trained it (its manifest), if known
    num_layers: int | None
    model_type: str | None
    hidden_size: int | None
    vocab_size: int | None
    tokenizer: str | None  # digest of the tokenizer's vocabulary, None if it cannot be read
    prior: str | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise IncompatibleValueModelError(f"{path} is unreadable ({err})") from None


def tokenizer_digest(directory: Path) -> str | None:
    """A digest of the vocabulary (token -> id, added tokens) of the tokenizer saved in
    `directory`; equal digests read text into the same ids. None without a tokenizer.json."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return None
    data = _read_json(path)
    model = data.get("model") or {}
    vocab = model.get("vocab")
    added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens") or [])
    canonical = json.dumps([model.get("type"), vocab, added], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _value_model_files(directory: Path) -> tuple[dict, dict]:
    """A saved value model's trunk config and its own settings (head, prior, ...), from either
    layout; a directory that is no value model raises."""
    config_path = directory / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    if config.get("model_type") == VALUE_MODEL_TYPE:
        return config.get("text_config") or {}, config
    meta_path = directory / LEGACY_META
    if not meta_path.is_file():
        raise IncompatibleValueModelError(
            f"{directory} is not a saved value model (no config.json of model_type "
            f"{VALUE_MODEL_TYPE!r}, no {LEGACY_META}); name the value_model directory of a "
            "value artifact"
        )
    meta = _read_json(meta_path)
    if meta.get("kind") != VALUE_KIND:
        raise IncompatibleValueModelError(
            f"{directory}: {LEGACY_META} describes a {meta.get('kind')!r}, not a {VALUE_KIND}"
        )
    return config, meta


def read_value_model(directory: str | Path) -> ValueModelInfo:
    """The facts `check_value_models` compares; a directory that is no value model raises."""
    directory = Path(directory)
    trunk, settings = _value_model_files(directory)
    manifest_path = directory.parent / MANIFEST
    trained_with = {}
    if manifest_path.is_file():
        trained_with = _read_json(manifest_path).get("config") or {}
    return ValueModelInfo(
        directory=directory,
        backbone=trained_with.get("value.backbone"),
        num_layers=trained_with.get("value.num_layers"),
        model_type=trunk.get("model_type"),
        hidden_size=trunk.get("hidden_size", settings.get("hidden_size")),
        vocab_size=trunk.get("vocab_size"),
        tokenizer=tokenizer_digest(directory),
        prior=settings.get("prior"),
    )


def _differs(a: Any, b: Any) -> bool:
    """Both known and different (an unknown fact never blocks)."""
    return a is not None and b is not None and a != b


def check_value_models(
    directories: Sequence[str | Path],
    backbone: str | None = None,
    backbone_dir: str | Path | None = None,
) -> list[ValueModelInfo]:
    """Check saved value models before they are loaded; returns what was read.

    - each directory is a saved token value model;
    - `backbone` (the config's value.backbone): each model's manifest, where it has one, records
      the same backbone;
    - `backbone_dir` (that backbone resolved to a checkpoint directory, when at hand): each model
      has the backbone's architecture (model_type, hidden_size, vocab_size) and tokenizer.

    Value models of one policy may use different tokenizers from the policy (each re-tokenises the
    text), so the policy's tokenizer is not compared.
    """
    infos = [read_value_model(d) for d in directories]
    for info in infos:
        if backbone is not None and _differs(info.backbone, backbone):
            raise IncompatibleValueModelError(
                f"value model {info.directory} was trained on value.backbone {info.backbone!r} "
                f"(its manifest) but this config's value.backbone is {backbone!r}; use value "
                f"models trained with this config (rerun its iterations) or set value.backbone: "
                f"{info.backbone}"
            )
    if backbone_dir is not None:
        backbone_dir = Path(backbone_dir)
        config_path = backbone_dir / "config.json"
        expected = _read_json(config_path) if config_path.is_file() else {}
        expected_tokenizer = tokenizer_digest(backbone_dir)
        for info in infos:
            for field in ("model_type", "hidden_size", "vocab_size"):
                if _differs(getattr(info, field), expected.get(field)):
                    raise IncompatibleValueModelError(
                        f"value model {info.directory} has {field} {getattr(info, field)!r} but "
                        f"the backbone {backbone_dir} has {expected.get(field)!r}: it was trained "
                        "on another backbone; retrain it with this config's value.backbone"
                    )
            if _differs(info.tokenizer, expected_tokenizer):
                raise IncompatibleValueModelError(
                    f"value model {info.directory} reads text with another tokenizer than the "
                    f"backbone {backbone_dir} (their vocabularies differ); retrain it with this "
                    "config's value.backbone"
                )
    return infos


def check_run_inputs(cfg: RunConfig, iterations: int, evaluate: bool) -> None:
    """What a run reads, checked before any expensive work (`iro check`, `iro run`, and a flow's
    start): every model reference resolves (without converting the embedded model), pickled
    weights are refused, a hub id is at hand when the hub is offline, and the dataset's splits
    hold enough prompts for `iterations` iterations (and the evaluation when `evaluate`)."""
    references = [cfg.policy.model, cfg.value.backbone, cfg.ivl.backbone]
    if cfg.ivl.train_base is not None:
        references.append(cfg.ivl.train_base)
    if cfg.search.implicit_reward is not None:
        references += [cfg.search.implicit_reward.tuned, cfg.search.implicit_reward.untuned]
    for reference in dict.fromkeys(references):
        check_model_reference(reference)
    check_prompt_counts(cfg.data, iterations, evaluate)
