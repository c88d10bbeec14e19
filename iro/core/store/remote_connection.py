"""What every part of the store on a URL stands on: the filesystem, the keys of the remote layout
(see iro.core.store.remote), the local working copy, and reading what is published.

`RemotePublication` and `RemoteMaintenance` extend it; `RemoteArtifactStore` is both.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from iro.core.fsutil import atomic_write_text
from iro.core.store.artifact import MANIFEST, ArtifactError
from iro.core.store.base import StoreBase
from iro.core.store.checks import manifest_problem
from iro.core.store.local import ArtifactStore
from iro.core.store.remote_errors import RemoteErrors, endpoint_of

log = logging.getLogger(__name__)

BLOBS = "blobs"
# `<cache>/.published/<stage>/<id>`: this machine saw the artifact published; a local hit then
# needs no request. Hidden, so the local store never takes it for a stage.
PUBLISHED = ".published"
ORIGIN = ".origin"  # `<cache>/.origin`: which URL a cache directory mirrors, for humans
# protocols whose first path component is a bucket (or container) that must exist beforehand
_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}


def cache_key(url: str, options: dict[str, Any]) -> str:
    """One cache directory per (URL, endpoint): two servers may hold buckets of the same name."""
    return hashlib.sha256(f"{url}\n{endpoint_of(options) or ''}".encode()).hexdigest()[:16]


def hash_stream(source: BinaryIO, sink: BinaryIO | None) -> str:
    """The sha256 of what `source` holds, copied into `sink` on the way if given."""
    digest = hashlib.sha256()
    for block in iter(lambda: source.read(1 << 20), b""):
        digest.update(block)
        if sink is not None:
            sink.write(block)
    return digest.hexdigest()


class RemoteConnection(StoreBase):
    def __init__(self, url: str, cache: str | Path, options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.local = ArtifactStore(Path(cache) / cache_key(self.url, self.options))
        self._errors = RemoteErrors(self.url, self.options, self.local.root)
        self._where = self._errors.where
        self._probed = False
        with self._remote("open the filesystem"):
            self._fs, self._base = fsspec.core.url_to_fs(self.url, **self._fs_options())
        self._base = self._base.rstrip("/")

    def _fs_options(self) -> dict[str, Any]:
        """No shared instance and no listing cache: another machine changes the bucket."""
        return {"skip_instance_cache": True, "use_listings_cache": False, **self.options}

    # -- the local working copy: what readers and the pipeline see --

    @property
    def root(self) -> Path:
        """The local working copy's root (work directories and run records live there)."""
        return self.local.root

    def path_of(self, stage: str, artifact_id: str) -> Path:
        return self.local.path_of(stage, artifact_id)

    # -- reaching the URL --

    def _remote(self, doing: str) -> AbstractContextManager[None]:
        """Any error of the remote filesystem inside, as an ArtifactError naming the URL."""
        return self._errors.translated(doing)

    def _probe(self) -> None:
        """Once: reach the endpoint, and check the bucket exists, before anything relies on it."""
        if self._probed:
            return
        protocols = self._fs.protocol
        protocols = {protocols} if isinstance(protocols, str) else set(protocols)
        bucket = self._base.split("/", 1)[0]
        if protocols & _BUCKET_PROTOCOLS and bucket:
            with self._remote(f"reach bucket {bucket!r}"):
                try:
                    self._fs.info(bucket)
                except PermissionError:  # may read objects without seeing the bucket: go on
                    log.debug("cannot inspect bucket %r; its objects will tell", bucket)
                except FileNotFoundError:
                    raise ArtifactError(
                        f"artifact store {self._where}: bucket {bucket!r} does not exist (at "
                        f"endpoint {self._errors.endpoint or 'the default'}); create "
                        "it or correct store.root / store.options.endpoint_url"
                    ) from None
        self._probed = True

    # -- remote keys, and this machine's record of what is published --

    def _key(self, *parts: str) -> str:
        return "/".join([self._base, *parts])

    def _where_is(self, *parts: str) -> str:
        return "/".join([self._where, *parts])

    def _manifest_key(self, stage: str, artifact_id: str) -> str:
        return self._key(stage, artifact_id, MANIFEST)

    def _blob_key(self, stage: str, artifact_id: str, digest: str) -> str:
        return self._key(stage, artifact_id, BLOBS, digest)

    def _marker(self, stage: str, artifact_id: str) -> Path:
        return self.root / PUBLISHED / stage / artifact_id

    def _mark_published(self, stage: str, artifact_id: str) -> None:
        marker = self._marker(stage, artifact_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        origin = self.root / ORIGIN
        if not origin.exists():
            atomic_write_text(origin, self._where + "\n")

    # -- reading what is published --

    def _remote_manifest(self, stage: str, artifact_id: str) -> bytes | None:
        """The published manifest's bytes, or None when the artifact is not published."""
        self.path_of(stage, artifact_id)  # checks the names
        self._probe()
        with self._remote(f"read the manifest of {stage}/{artifact_id}"):
            try:
                return self._fs.cat_file(self._manifest_key(stage, artifact_id))
            except FileNotFoundError:
                return None

    def _parse_manifest(self, stage: str, artifact_id: str, data: bytes) -> dict[str, Any]:
        """The published manifest, if it is safe to download; else an ArtifactError."""
        manifest, problem = manifest_problem(data, stage, artifact_id, published=True)
        if problem is not None:
            raise ArtifactError(self._published_damage(stage, artifact_id, problem))
        return manifest

    def _published_damage(self, stage: str, artifact_id: str, problem: str) -> str:
        return (
            f"published artifact {self._where_is(stage, artifact_id)}: {problem}; it was not "
            f"used. Unpublish it with `iro store quarantine {stage}/{artifact_id}` and rerun to "
            "rebuild it"
        )

    def _blob_problem(
        self, stage: str, artifact_id: str, name: str, digest: str, dest: Path | None
    ) -> str | None:
        """Stream one published file (into `dest`, if given) and say what is wrong with it."""
        key = self._blob_key(stage, artifact_id, digest)
        with self._remote(f"download {name} of {stage}/{artifact_id}"):
            try:
                with self._fs.open(key, "rb") as source:
                    if dest is None:
                        actual = hash_stream(source, None)
                    else:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with dest.open("wb") as sink:
                            actual = hash_stream(source, sink)
            except FileNotFoundError:
                return f"file {name} is missing (no {BLOBS}/{digest})"
        if actual != digest:
            return f"checksum mismatch for {name} (changed or damaged since it was published)"
        return None
