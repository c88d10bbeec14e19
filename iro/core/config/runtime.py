"""Where artifacts are kept and where generation runs: the store and the Ray workers."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from iro.core.config.base import Section


class StoreConfig(Section):
    """Where artifacts and run records are kept: a local directory, or a URL that several
    machines share through local working copies."""

    root: str = Field(
        ".iro/store",
        description="a local directory or an fsspec URL (s3://bucket/prefix): with a URL, "
        "artifacts are built in `cache` and published to the URL, and found there by any machine",
    )
    cache: str = Field(
        ".iro/store-cache", description="with a URL root: the local working copy of its artifacts"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for a URL root (e.g. {endpoint_url: ...}); "
        "credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never from here",
    )


class RayConfig(Section):
    """Shard generation across Ray workers, each with its own engine; results do not change."""

    workers: int = Field(1, ge=1, description="1: generate in this process; N: N Ray actors")
    address: str | None = Field(
        None, description="an existing cluster (ray://host:10001 or auto); null: start a local one"
    )
    cpus_per_worker: float = Field(
        1.0,
        gt=0,
        description="CPUs Ray reserves for each worker; a local cluster starts with workers x "
        "this many (rounded up), and workers a cluster cannot place are refused",
    )
    gpus_per_worker: float = Field(0.0, ge=0, description="1 on GPU machines: an engine per GPU")
