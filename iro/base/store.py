"""Content-addressed, immutable artifact store.

An artifact is a directory ``<root>/<stage>/<id>/`` holding its files and a ``manifest.json``:
stage, id, parent ids, the config slice that produced it, the code version (package version and
git commit), metrics, file checksums and creation time. The id hashes (stage, stage version,
config slice, parent ids), so the same inputs give the same id (a rerun reuses the artifact) and
a changed config gives a new artifact beside the old one, never over it. Bump a stage's version
when its output changes meaning, so old artifacts are not reused by mistake.

Artifacts are written into a temporary sibling directory and renamed into place, so a crash leaves
either nothing or a complete artifact; readers verify checksums.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from iro.base.fsutil import atomic_write_json, directory_lock, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """An artifact that is missing or fails verification."""


@functools.cache
def code_version() -> dict[str, Any]:
    """The code that builds artifacts: the package version and, in a git checkout, its commit.

    `git_dirty` says whether tracked files differ from that commit. Without git, or when the
    `iro` package is not in a checkout, both git fields are None. Looked up once per process;
    recorded in manifests, never part of an artifact id.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("iro-align")
    except PackageNotFoundError:
        package = None
    return {"package": package, **_git_state(Path(__file__).resolve().parents[2])}


def _git_state(root: Path) -> dict[str, Any]:
    """HEAD and dirtiness of the checkout whose top level is `root`, else None for both."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != root:  # e.g. an installed copy inside some other repository
            raise ValueError(top)
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


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


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

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

    def path_of(self, stage: str, artifact_id: str) -> Path:
        return self.root / stage / artifact_id

    def find(self, stage: str, artifact_id: str) -> Artifact | None:
        """The finished artifact with this id, verified, or None if it was never completed."""
        path = self.path_of(stage, artifact_id)
        if not (path / MANIFEST).is_file():
            return None
        return self.load(path)

    def load(self, path: Path) -> Artifact:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(f"no artifact at {path} (missing {MANIFEST})")
        manifest = json.loads(manifest_path.read_text())
        for name, digest in manifest["files"].items():
            file_path = path / name
            if not file_path.is_file():
                raise ArtifactError(f"artifact {path} is missing its file {name}")
            if sha256_file(file_path) != digest:
                raise ArtifactError(f"artifact {path}: checksum mismatch for {name}")
        return Artifact(manifest["stage"], manifest["id"], path, manifest)

    def create(
        self,
        stage: str,
        version: int,
        config: dict[str, Any],
        parents: Sequence[Artifact],
        build: Callable[[Path], dict[str, Any]],
        run_name: str | None = None,
    ) -> Artifact:
        """Build the artifact with `build(staging_dir) -> metrics` unless it already exists."""
        artifact_id = self.artifact_id(stage, version, config, parents)
        existing = self.find(stage, artifact_id)
        if existing is not None:
            return existing
        target = self.path_of(stage, artifact_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{artifact_id}.", dir=target.parent))
        try:
            started = time.time()
            metrics = build(staging)
            files = {
                str(p.relative_to(staging)): sha256_file(p)
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            }
            manifest = {
                "stage": stage,
                "id": artifact_id,
                "stage_version": version,
                "parents": [{"stage": p.stage, "id": p.id} for p in parents],
                "config": config,
                "metrics": metrics,
                "files": files,
                "code_version": code_version(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.time() - started, 3),
                "created_by_run": run_name,
            }
            atomic_write_json(staging / MANIFEST, manifest)
            staging.chmod(0o755)
            try:
                staging.rename(target)
            except OSError:
                # another process finished the same artifact first: theirs is identical
                if self.find(stage, artifact_id) is None:
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.load(target)

    # -- the run index: which artifacts make up a named run, for humans and later steps --

    def run_dir(self, run_name: str) -> Path:
        return self.root / "runs" / run_name

    @contextmanager
    def run_lock(self, run_name: str) -> Iterator[None]:
        """Serialise work on one named run across processes; different runs never wait.

        Artifacts are immutable and written atomically, so a race could not corrupt them, but two
        processes building the same stage would waste the machine; the second one waits and then
        finds everything reused.
        """

        def waiting() -> None:
            log.info("run %r is busy in another process; waiting for it to finish", run_name)

        with directory_lock(self.run_dir(run_name) / ".lock", on_wait=waiting):
            yield

    def record_run_step(self, run_name: str, name: str, data: dict[str, Any]) -> Path:
        path = self.run_dir(run_name) / f"{name}.json"
        atomic_write_json(path, data)
        return path
