"""The GPUs a plan can be priced on: peak throughput and memory, from the vendors' data sheets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    """Dense peak throughput (no sparsity) in TFLOP/s, and memory in GiB."""

    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float

    def peak_flops(self, dtype: str) -> float:
        return 1e12 * (self.fp32_tflops if dtype == "float32" else self.bf16_tflops)


GPUS = {
    "h100": Gpu("H100 SXM", 989.0, 67.0, 80),
    "h200": Gpu("H200 SXM", 989.0, 67.0, 141),
    "a100": Gpu("A100 SXM 80GB", 312.0, 19.5, 80),
    "l4": Gpu("L4", 121.0, 30.3, 24),
}
