"""The part of a store both implementations share outright: an artifact's id, and `create`'s
order (reuse the artifact if any store has it, else build it).

A base class rather than functions because `create` is a template: each store says only how it
finds an artifact and how it builds a missing one (`ArtifactStore` into a staging directory,
`RemoteArtifactStore` locally, then publishing it).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iro.core.store.artifact import Artifact

Build = Callable[[Path], dict[str, Any]]  # build(staging_dir) -> metrics


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _drop_unset(data: Any) -> Any:
    """Remove None-valued keys: a new optional setting, left unset, keeps existing ids valid."""
    if isinstance(data, dict):
        return {k: _drop_unset(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_unset(v) for v in data]
    return data


@dataclass(frozen=True)
class BuildSpec:
    """A missing artifact, as `create` hands it to a store's `_build`: its id, the inputs that
    gave it (recorded in its manifest), and the build that makes its files."""

    stage: str
    artifact_id: str
    version: int
    config: dict[str, Any]
    parents: Sequence[Artifact]
    build: Build
    run_name: str | None


class StoreBase(ABC):
    """`artifact_id` and `create` for both stores; each supplies `find` and `_build`."""

    def artifact_id(
        self, stage: str, version: int, config: dict[str, Any], parents: Sequence[Artifact]
    ) -> str:
        key = canonical_json(
            {
                "stage": stage,
                "version": version,
                "config": _drop_unset(config),
                "parents": [p.id for p in parents],
            }
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def create(
        self,
        stage: str,
        version: int,
        config: dict[str, Any],
        parents: Sequence[Artifact],
        build: Build,
        run_name: str | None = None,
    ) -> Artifact:
        """The artifact for these inputs: the existing one, else `build(staging_dir) -> metrics`
        run once and its output kept as the artifact (see `_build`)."""
        artifact_id = self.artifact_id(stage, version, config, parents)
        existing = self.find(stage, artifact_id)
        if existing is not None:
            return existing
        return self._build(BuildSpec(stage, artifact_id, version, config, parents, build, run_name))

    @abstractmethod
    def find(self, stage: str, artifact_id: str) -> Artifact | None:
        """The finished artifact with this id, verified, or None if it was never completed."""

    @abstractmethod
    def _build(self, spec: BuildSpec) -> Artifact:
        """Build the artifact `find` did not find, keep it, and return it."""
