"""The publication protocol of the store on a URL: finding, downloading, building and publishing.

Blobs go first, the manifest last with a conditional put (If-None-Match), so the first publisher
wins and a published artifact never changes; a writer that lost the race adopts the winner's
copy. A download is checked against the manifest's checksums in a staging directory of the
working copy and renamed into place, as the local store does with a build.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import suppress
from pathlib import Path

from iro.core.fsutil import ProcessId
from iro.core.store.artifact import MANIFEST, Artifact, ArtifactError
from iro.core.store.base import BuildSpec
from iro.core.store.checks import first_file_problem, manifest_problem
from iro.core.store.remote_connection import RemoteConnection

log = logging.getLogger(__name__)

# a conditional put: fails with FileExistsError when the object exists (If-None-Match on S3)
_CREATE = {"mode": "create"}


class RemotePublication(RemoteConnection):
    def find(self, stage: str, artifact_id: str) -> Artifact | None:
        """The artifact from the working copy (published first if it never was), else downloaded
        from the URL, else None: nobody has published it."""
        local = self.local.find(stage, artifact_id)
        if local is not None:
            return self._ensure_published(local)
        data = self._remote_manifest(stage, artifact_id)
        if data is None:
            return None
        return self._download(stage, artifact_id, data)

    def load(self, path: str | Path) -> Artifact:
        """The artifact at `path` in the working copy, downloaded first if only published."""
        path = Path(path)
        local_root = self.root.resolve()
        if not (path / MANIFEST).is_file() and path.resolve().parent.parent == local_root:
            found = self.find(path.parent.name, path.name)
            if found is not None:
                return found
        return self.local.load(path)

    def _build(self, spec: BuildSpec) -> Artifact:
        """Nobody has published it: build it in the working copy, then publish it."""
        built = self.local.create(
            spec.stage, spec.version, spec.config, spec.parents, spec.build, spec.run_name
        )
        return self._ensure_published(built)

    def _download(self, stage: str, artifact_id: str, data: bytes) -> Artifact:
        """Fetch a published artifact into staging, check every file, rename it into place."""
        manifest = self._parse_manifest(stage, artifact_id, data)
        target = self.path_of(stage, artifact_id)
        if (target / MANIFEST).is_file():  # another process of this machine was quicker
            return self.local.load(target)
        with self.local.staged(target) as staging:

            def fetch(name: str, digest: str) -> str | None:
                return self._blob_problem(stage, artifact_id, name, digest, staging / name)

            problem = first_file_problem(manifest["files"], fetch)
            if problem is not None:
                raise ArtifactError(self._published_damage(stage, artifact_id, problem))
            (staging / MANIFEST).write_bytes(data)
        log.info("downloaded %s/%s from %s", stage, artifact_id, self._where)
        self._mark_published(stage, artifact_id)
        return self.local.load(target)

    def _ensure_published(self, artifact: Artifact) -> Artifact:
        """`artifact`, published if nobody has; if another writer published this id first, its
        copy replaces ours, so every machine uses the same files for an id."""
        if self._marker(artifact.stage, artifact.id).exists():
            return artifact
        data = self._remote_manifest(artifact.stage, artifact.id)
        if data is None:
            data = self._upload(artifact)
            if data is None:
                return artifact
        return self._adopt(artifact, data)

    def _upload(self, artifact: Artifact) -> bytes | None:
        """Upload the files, then the manifest if nobody published one meanwhile. Returns None
        when ours was published, else the manifest that was there first."""
        ref = f"{artifact.stage}/{artifact.id}"
        ours = (artifact.path / MANIFEST).read_bytes()
        doing = f"publish {ref} (it stays in {artifact.path}; a rerun publishes it)"
        with self._remote(doing):
            for name, digest in sorted(artifact.manifest["files"].items()):
                key = self._blob_key(artifact.stage, artifact.id, digest)
                self._fs.put_file(str(artifact.path / name), key)
            try:
                self._fs.pipe_file(self._manifest_key(artifact.stage, artifact.id), ours, **_CREATE)
            except FileExistsError:
                theirs = self._fs.cat_file(self._manifest_key(artifact.stage, artifact.id))
            else:
                log.info("published %s to %s", ref, self._where)
                self._mark_published(artifact.stage, artifact.id)
                return None
        log.info("%s was published first by another writer; using that copy", ref)
        self._drop_orphans(artifact, theirs)
        return theirs

    def _adopt(self, artifact: Artifact, data: bytes) -> Artifact:
        """Our copy if it is the published one, else the published one in its place."""
        if data == (artifact.path / MANIFEST).read_bytes():
            self._mark_published(artifact.stage, artifact.id)
            return artifact
        self._parse_manifest(artifact.stage, artifact.id, data)  # never discard for a bad one
        log.info("replacing %s with the published copy of %s", artifact.path, artifact.id)
        aside = artifact.path.with_name(f".{artifact.id}.{ProcessId.current().tag}.old")
        with suppress(FileNotFoundError):  # another process of this machine did it
            artifact.path.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        return self._download(artifact.stage, artifact.id, data)

    def _drop_orphans(self, artifact: Artifact, theirs: bytes) -> None:
        """Remove the files we uploaded that the published manifest does not name."""
        published, _ = manifest_problem(theirs, artifact.stage, artifact.id, published=True)
        keep = set(published.get("files", {}).values())
        for digest in set(artifact.manifest["files"].values()) - keep:
            try:
                self._fs.rm_file(self._blob_key(artifact.stage, artifact.id, digest))
            except Exception as err:  # only wasted space: never fail a run for it
                why = self._errors.scrub(f"{type(err).__name__}: {err}")
                log.warning("could not remove an unpublished file of %s (%s)", artifact.id, why)
