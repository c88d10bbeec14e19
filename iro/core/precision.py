"""`auto` precision: bfloat16 where the hardware computes it natively, float32 elsewhere.

bf16 halves the memory of weights and activations and, on GPUs and on CPUs with AVX512-BF16 or
AMX, runs 1.6-2.2x faster than float32. A CPU without them (AVX2 only) emulates it: there the same
matmul takes about 8x longer than in float32. So a config that runs on both kinds of machine says
`auto`, and the config resolves it, before anything reads it, to what this machine computes fast.
The resolved value is what artifact ids and run records hold: outputs differ between precisions.
It is resolved where the config is read: a run record keeps the precision its artifacts were
built in, and `iro check --plan` on a machine without a GPU plans `auto` as float32.
"""

from __future__ import annotations

from functools import cache

AUTO = "auto"


def compute_device() -> str:
    """Where the policy and value training run: the first GPU where there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def bf16_is_native(device: str) -> bool:
    """Whether `device` (cpu, cuda, cuda:N) computes bfloat16 in hardware."""
    import torch

    if device.startswith("cuda"):  # Ampere (compute capability 8.0) and later; older ones emulate
        index = int(device.partition(":")[2] or 0)
        return torch.cuda.is_available() and torch.cuda.get_device_capability(index) >= (8, 0)
    flags = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, flag, lambda: False)() for flag in flags)


def resolve_dtype(dtype: str, device: str | None = None) -> str:
    """`dtype` itself, or for `auto` bfloat16 where `device` (default: `compute_device()`)
    computes it natively and float32 where it does not."""
    if dtype != AUTO:
        return dtype
    return "bfloat16" if bf16_is_native(device or compute_device()) else "float32"


def resolve_bf16() -> bool:
    """TrainingArguments' `bf16: auto`: whether `compute_device()`, where training runs, computes
    bf16 natively."""
    return resolve_dtype(AUTO) == "bfloat16"
