"""What an artifact is, as both stores hold it: its record, the names of its layout, its error,
and the results of verifying and collecting a store.

Kept apart from either store so that the shared checks (`artifact_checks`), the interface
(`store_protocol`) and both implementations can use these types without importing each other.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST = "manifest.json"
RUNS = "runs"
# `<root>/.quarantine/<stage>/<id>.<time>`: artifacts (or, at a URL, manifests) set aside
QUARANTINE = ".quarantine"
# a stage or id as a directory name: no separators, not hidden, not `.` or `..`
ENTRY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# errors of a full or read-only store, reported as such wherever they come from
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class ArtifactError(RuntimeError):
    """An artifact that is missing or fails verification."""


@dataclass(frozen=True)
class Artifact:
    stage: str
    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest["metrics"]

    def file(self, name: str) -> Path:
        return self.path / name

    def table(self, name: str = "table.parquet") -> pd.DataFrame:
        return pd.read_parquet(self.path / name)


@dataclass(frozen=True)
class ArtifactCheck:
    """One artifact's verification: `problem` says what is wrong, None when it is sound."""

    stage: str
    id: str
    path: Path
    problem: str | None

    @property
    def ref(self) -> str:
        return f"{self.stage}/{self.id}"


@dataclass
class GcReport:
    """What `gc` removed (or, dry, would remove), and how much it kept."""

    artifacts: list[Path | str] = field(default_factory=list)  # str: a URL's artifacts
    staging: list[Path | str] = field(default_factory=list)  # str: a URL's unpublished uploads
    work: list[Path] = field(default_factory=list)  # work directories (WORK) of no more use
    kept: int = 0
    recent: int = 0  # at a URL: unreferenced, but written too recently to tell (min_age_hours)
    runs: int = 0
    bytes: int = 0


def checked_name(name: str, what: str) -> str:
    """`name` if it is one plain directory name, so that a path built from it stays in the store
    (no `..`, no separator, not absolute, not hidden)."""
    if not isinstance(name, str) or not ENTRY_NAME.fullmatch(name):
        raise ArtifactError(
            f"{what} {name!r} is not a plain name (letters, digits, '_', '-', '.'; not starting "
            "with '.'): it would leave the artifact store"
        )
    return name


def set_aside_hint(path: Path) -> str:
    """The one command that fixes a damaged artifact: the next run then rebuilds it."""
    return (
        f"set it aside with `iro store quarantine {path.parent.name}/{path.name}` "
        "and rerun to rebuild it"
    )
