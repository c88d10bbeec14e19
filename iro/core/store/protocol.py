"""`Store`: the operations the pipeline, the reports and the `iro store` commands use on an
artifact store, whichever `open_store` returns.

A Protocol in a module of its own, rather than a base class in store.py: callers depend on what a
store does, not on either implementation, and neither implementation module has to import the
other for the type. `ArtifactStore` (a directory) and `RemoteArtifactStore` (a URL with a local
working copy) both satisfy it structurally; tests/test_store_interface.py checks that they do.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from iro.core.store.artifact import Artifact, ArtifactCheck, GcReport
from iro.core.store.base import Build


@runtime_checkable
class Store(Protocol):
    @property
    def root(self) -> Path:
        """The local directory holding artifacts, run records and work directories."""
        ...

    def artifact_id(
        self, stage: str, version: int, config: dict[str, Any], parents: Sequence[Artifact]
    ) -> str:
        """The id these inputs give, whether or not the artifact exists."""
        ...

    def find(self, stage: str, artifact_id: str) -> Artifact | None:
        """The finished artifact, verified, or None when nobody completed it."""
        ...

    def load(self, path: str | Path) -> Artifact:
        """The artifact at this local path, verified; raises ArtifactError when it is not one."""
        ...

    def create(
        self,
        stage: str,
        version: int,
        config: dict[str, Any],
        parents: Sequence[Artifact],
        build: Build,
        run_name: str | None = None,
    ) -> Artifact:
        """The existing artifact for these inputs, else the output of `build(staging_dir)`."""
        ...

    def run_dir(self, run_name: str) -> Path:
        """The local directory of a named run's records."""
        ...

    def run_lock(self, run_name: str) -> AbstractContextManager[None]:
        """Held while working on a named run, so two processes never build its stages at once."""
        ...

    def record_run_step(self, run_name: str, name: str, data: dict[str, Any]) -> Path:
        """Write (and, at a URL, publish) the run record `name`; returns its local path."""
        ...

    def verify(self) -> list[ArtifactCheck]:
        """Every artifact of the store, each checked against its manifest."""
        ...

    def quarantine(self, ref: str) -> tuple[Path | str, str | None]:
        """Set artifact `STAGE/ID` aside so the next run rebuilds it: where it went, and what was
        wrong with it (None when it verified)."""
        ...

    def gc(self, dry_run: bool = False) -> GcReport:
        """Remove what no run record references; `dry_run` only reports."""
        ...
