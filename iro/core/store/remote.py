"""The artifact store on an object store (any fsspec URL: s3://bucket/prefix, gs://..., ...).

`RemoteArtifactStore` keeps a local `ArtifactStore` as its working copy (`store.cache`, one
directory per URL) and publishes every artifact it builds to the URL, where any machine finds it.
Readers get local paths, so everything that reads an artifact's files works unchanged.

Remote layout, under the URL:

    <stage>/<id>/manifest.json       the local manifest, byte for byte: the artifact is published
    <stage>/<id>/blobs/<sha256>      each file, named by its checksum (the manifest maps names)
    runs/<run>/<name>.json           run records (plain puts: the last writer wins)
    .quarantine/<stage>/<id>.<time>/ manifests unpublished by `iro store quarantine`

Publication is atomic: blobs go first, the manifest last with a conditional put (If-None-Match,
so the first publisher wins and a published artifact never changes). Without a manifest nothing
is published: a crash mid-upload leaves blobs that readers never look at, and the next `find` or
`create` on the machine that built it uploads again. Blobs are named by content, so a writer that
lost the race cannot overwrite the files of the winner; it adopts the published copy instead,
and every machine ends up with the same files for an id. Downloads are checked against the
manifest's checksums before they are renamed into the cache, as the local store does.

A run lock (`run_lock`) serialises the work of one machine only; across machines, publication is
safe by the conditional put; for the same reason gc on a URL goes by age as well as by
references (`RemoteArtifactStore.gc`).

The store is assembled from one module per job: remote_connection (the filesystem, keys and
working copy), remote_errors (fsspec and S3 errors as ArtifactError), remote_publish (the
publication protocol) and remote_maintenance (verify, quarantine, gc). This module holds the
store itself, its run records, and `open_store`, which picks the store for a config.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any

from iro.core.config import StoreConfig
from iro.core.fsutil import atomic_write_text
from iro.core.store.artifact import ENTRY_NAME, RUNS, checked_name
from iro.core.store.local import ArtifactStore
from iro.core.store.protocol import Store
from iro.core.store.remote_connection import BLOBS
from iro.core.store.remote_maintenance import GC_MIN_AGE_HOURS, RemoteMaintenance
from iro.core.store.remote_publish import RemotePublication

__all__ = [
    "BLOBS",
    "GC_MIN_AGE_HOURS",
    "RemoteArtifactStore",
    "Store",
    "is_url",
    "open_store",
]


def is_url(root: str | Path) -> bool:
    """Whether a store root names an object store rather than a local directory."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def open_store(store: StoreConfig | str | Path) -> Store:
    """The store for a config's `store` section (or a bare root): local for a directory or a
    file:// URL, published to the URL otherwise."""
    cfg = store if isinstance(store, StoreConfig) else StoreConfig(root=str(store))
    if not is_url(cfg.root):
        return ArtifactStore(cfg.root.removeprefix("file://"))
    return RemoteArtifactStore(cfg.root, cfg.cache, cfg.options)


class RemoteArtifactStore(RemotePublication, RemoteMaintenance):
    """The `Store` interface over a URL, with a local working copy (see the module doc)."""

    def __repr__(self) -> str:
        return f"RemoteArtifactStore({self._where!r}, cache={str(self.local.root)!r})"

    def run_lock(self, run_name: str) -> AbstractContextManager[None]:
        """This machine's run lock: publication across machines needs none (conditional put)."""
        return self.local.run_lock(run_name)

    def remove_stale_staging(self) -> list[Path]:
        return self.local.remove_stale_staging()

    def referenced(self) -> set[tuple[str, str]]:
        return self.local.referenced()

    # -- run records --

    def run_dir(self, run_name: str) -> Path:
        """The run's local directory, holding the run's records as published by any machine
        (a published record replaces a different local one)."""
        path = self.local.run_dir(run_name)
        self._probe()
        with self._remote(f"read the records of run {run_name!r}"):
            for key in self._fs.glob(self._key(RUNS, run_name, "*.json")):
                name = PurePosixPath(key).name
                data = self._fs.cat_file(key) if ENTRY_NAME.match(name) else None
                local = path / name
                if data is not None and not (local.is_file() and local.read_bytes() == data):
                    atomic_write_text(local, data.decode())
        return path

    def record_run_step(self, run_name: str, name: str, data: dict[str, Any]) -> Path:
        """Write the record locally and publish it (a plain put: the last writer wins)."""
        path = self.local.record_run_step(run_name, name, data)
        self._probe()
        with self._remote(f"publish the run record {path} (written locally)"):
            self._fs.pipe_file(
                self._key(RUNS, checked_name(run_name, "run name"), path.name), path.read_bytes()
            )
        return path
