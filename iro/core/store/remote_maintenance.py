"""The `iro store` commands on a URL: verify, quarantine (unpublish) and gc.

Machines share no lock, so gc on a URL goes by age as well as by references (`gc`), and removes
only objects of this store's layout: other objects under a shared prefix are never garbage.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from iro.core.store.artifact import (
    ENTRY_NAME,
    MANIFEST,
    QUARANTINE,
    RUNS,
    ArtifactCheck,
    ArtifactError,
    GcReport,
)
from iro.core.store.checks import SHA256, first_file_problem, manifest_problem
from iro.core.store.refs import (
    artifact_ref,
    manifest_parents,
    quarantine_name,
    referenced_closure,
)
from iro.core.store.remote_connection import BLOBS, RemoteConnection

log = logging.getLogger(__name__)

# gc on a URL keeps what was written more recently than this: a run elsewhere may not have
# recorded it yet
GC_MIN_AGE_HOURS = 24.0


@dataclass
class _RemoteEntry:
    """The objects under one `<stage>/<id>` of a URL, as gc sees them."""

    keys: list[str] = field(default_factory=list)
    size: int = 0
    written: float = 0.0  # the newest object's time, epoch seconds
    published: bool = False  # its manifest is there


def _artifact_object(parts: tuple[str, ...]) -> bool:
    """Whether a key (as parts under the URL) is an artifact's: `<stage>/<id>/manifest.json` or
    `<stage>/<id>/blobs/<sha256>`."""
    if len(parts) < 3 or parts[0] == RUNS or not all(map(ENTRY_NAME.match, parts[:2])):
        return False
    return parts[2:] == (MANIFEST,) or (
        len(parts) == 4 and parts[2] == BLOBS and bool(SHA256.match(parts[3]))
    )


class RemoteMaintenance(RemoteConnection):
    # -- verify and quarantine --

    def _remote_problem(self, stage: str, artifact_id: str, data: bytes) -> str | None:
        """What is wrong with the published copy (every file downloaded and hashed), if anything."""
        manifest, problem = manifest_problem(data, stage, artifact_id, published=True)
        if problem is not None:
            return problem

        def fetched(name: str, digest: str) -> str | None:
            return self._blob_problem(stage, artifact_id, name, digest, None)

        return first_file_problem(manifest["files"], fetched)

    def verify(self) -> list[ArtifactCheck]:
        """Check every published artifact (downloading its files) and every local copy."""
        local = {(c.stage, c.id): c for c in self.local.verify()} if self.root.is_dir() else {}
        published = {key for key, entry in self._entries().items() if entry.published}
        checks = []
        for stage, artifact_id in sorted(published | set(local)):
            problem = None
            if (stage, artifact_id) in published:
                data = self._remote_manifest(stage, artifact_id)
                remote = None if data is None else self._remote_problem(stage, artifact_id, data)
                problem = None if remote is None else f"published copy: {remote}"
            mine = local.get((stage, artifact_id))
            if problem is None and mine is not None and mine.problem is not None:
                problem = f"local copy in {mine.path}: {mine.problem}"
            checks.append(
                ArtifactCheck(stage, artifact_id, self.path_of(stage, artifact_id), problem)
            )
        return checks

    def quarantine(self, ref: str) -> tuple[Path | str, str | None]:
        """Set aside this machine's copy of `stage/id`, and unpublish the published copy if it is
        damaged (a sound published copy stays: the next run downloads it again)."""
        stage, artifact_id = artifact_ref(ref)
        moved: Path | str | None = None
        problem = None
        if self.path_of(stage, artifact_id).is_dir():
            moved, problem = self.local.quarantine(f"{stage}/{artifact_id}")
        self._marker(stage, artifact_id).unlink(missing_ok=True)
        data = self._remote_manifest(stage, artifact_id)
        remote = None if data is None else self._remote_problem(stage, artifact_id, data)
        if data is not None and remote is not None:
            return self._unpublish(stage, artifact_id, data), f"published copy: {remote}"
        if moved is None:
            state = "is not published" if data is None else "is published and verified"
            raise ArtifactError(
                f"nothing set aside: no copy of {stage}/{artifact_id} in {self.root}, and it "
                f"{state} at {self._where}"
            )
        return moved, problem

    def _unpublish(self, stage: str, artifact_id: str, data: bytes) -> str:
        """Move the published manifest under QUARANTINE: the artifact is then not published and
        the next run rebuilds it (its files are overwritten then, being named by content)."""
        aside = (QUARANTINE, stage, quarantine_name(artifact_id))
        with self._remote(f"unpublish {stage}/{artifact_id}"):
            self._fs.pipe_file(self._key(*aside, MANIFEST), data)
            self._fs.rm_file(self._manifest_key(stage, artifact_id))
        log.info("unpublished %s/%s: its manifest is now in %s", stage, artifact_id, aside)
        return self._where_is(*aside)

    # -- gc --

    def gc(self, dry_run: bool = False, min_age_hours: float = GC_MIN_AGE_HOURS) -> GcReport:
        """Remove the published artifacts that no published run record references (nor any parent
        of one), and the files of uploads that never published; only what was last written at
        least `min_age_hours` ago. `dry_run` only reports.

        Machines share no lock, so age stands in for the local gc's run locks: a run publishes an
        artifact before a record names it, so anything younger stays, and so do its parents.
        Age is when an object was written, not when it was last read: an old unreferenced
        artifact that a run elsewhere is reusing right now can go; that run keeps its local copy
        (or, caught mid-download, stops naming it, and its rerun rebuilds it). The manifest goes
        first, so a gc killed midway leaves only unpublished files, which the next gc removes.
        This machine's working copy is not collected here: `iro store gc --root <cache>` does.
        """
        if not min_age_hours >= 0:
            raise ArtifactError(f"gc: min_age_hours must be 0 or more, got {min_age_hours}")
        cutoff = time.time() - min_age_hours * 3600
        entries = self._entries()
        records = self._published_records()
        published = {key for key, entry in entries.items() if entry.published}
        keep = referenced_closure(list(records.values()), published, self._published_parents)
        # a young artifact may be a run's that is not recorded yet: it keeps its parents too
        young = [{"stage": s, "id": i} for (s, i), e in entries.items() if e.written > cutoff]
        recent = referenced_closure(young, published, self._published_parents)
        report = GcReport(runs=len({run for run, _ in records}))
        for (stage, artifact_id), entry in sorted(entries.items()):
            if (stage, artifact_id) in keep:
                report.kept += 1
                continue
            if (stage, artifact_id) in recent or entry.written > cutoff:
                report.recent += 1
                continue
            if not dry_run and not self._remove_entry(stage, artifact_id, entry, cutoff):
                report.recent += 1
                continue
            where = self._where_is(stage, artifact_id)
            (report.artifacts if entry.published else report.staging).append(where)
            report.bytes += entry.size
        return report

    def _entries(self, under: str = "") -> dict[tuple[str, str], _RemoteEntry]:
        """Every `<stage>/<id>` under the URL (or under its `under`) with objects in it,
        published or not. Only this store's layout counts (a manifest, or blobs named by
        checksum): other objects under a shared prefix are never taken for garbage."""
        self._probe()
        with self._remote("list the objects under the URL"):
            objects = self._fs.find(self._key(under) if under else self._base, detail=True)
            entries: dict[tuple[str, str], _RemoteEntry] = {}
            for key, info in objects.items():
                parts = PurePosixPath(key).parts[len(PurePosixPath(self._base).parts) :]
                if not _artifact_object(parts):
                    continue  # run records, .quarantine, and anything not this store's
                entry = entries.setdefault((parts[0], parts[1]), _RemoteEntry())
                entry.keys.append(key)
                entry.size += int(info.get("size") or 0)
                entry.written = max(entry.written, self._written(key, info))
                entry.published |= parts[2:] == (MANIFEST,)
        return entries

    def _written(self, key: str, info: dict[str, Any]) -> float:
        """When an object was last written (epoch seconds), from its listing or by asking."""
        stamp = info.get("LastModified", info.get("mtime"))
        if stamp is None:
            stamp = self._fs.modified(key)
        return stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)

    def _published_records(self) -> dict[tuple[str, str], Any]:
        """Every published run record, by (run, name); one that cannot be read stops gc, since
        what it references is then unknown."""
        with self._remote("read the published run records"):
            keys = self._fs.glob(self._key(RUNS, "*", "*.json"))
            records = {}
            for key in keys:
                run, name = PurePosixPath(key).parts[-2:]
                if ENTRY_NAME.match(run) and ENTRY_NAME.match(name):
                    records[run, name] = self._fs.cat_file(key)
        try:
            return {ref: json.loads(data) for ref, data in records.items()}
        except ValueError as err:
            raise ArtifactError(
                f"a run record under {self._where_is(RUNS)} is not JSON ({err}), so what it "
                "references is unknown: not collecting garbage. Repair or remove it first"
            ) from None

    def _published_parents(self, key: tuple[str, str]) -> set[tuple[str, str]]:
        data = self._remote_manifest(*key)
        try:
            return manifest_parents(json.loads(data or b"{}"))
        except (ValueError, KeyError, TypeError) as err:
            problem = f"{MANIFEST} does not say its parents ({type(err).__name__}: {err})"
            raise ArtifactError(self._published_damage(*key, problem)) from None

    def _remove_entry(
        self, stage: str, artifact_id: str, entry: _RemoteEntry, cutoff: float
    ) -> bool:
        """Unpublish first (readers stop finding it), then remove its files; False, removing
        nothing, when a listing taken now shows it changed (written again, or published) since
        gc listed it. Objects written in the instant between that listing and the removal can
        still go: a rebuild of the same id then publishes a manifest with missing files, which
        `iro store verify` finds and `iro store quarantine` repairs."""
        where = self._where_is(stage, artifact_id)
        now = self._entries(f"{stage}/{artifact_id}").get((stage, artifact_id))
        if now is None or now.written > cutoff or now.published != entry.published:
            log.info("kept %s: it changed while gc ran", where)
            return False
        manifest = self._manifest_key(stage, artifact_id)
        with self._remote(f"remove {stage}/{artifact_id}"):
            if now.published:
                self._fs.rm_file(manifest)
            files = [key for key in now.keys if key != manifest]
            if files:
                self._fs.rm(files)
        self._marker(stage, artifact_id).unlink(missing_ok=True)
        why = "no run references it" if now.published else "an upload that never published"
        log.info("removed %s: %s", where, why)
        return True
