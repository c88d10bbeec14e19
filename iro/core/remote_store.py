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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, BinaryIO

import fsspec

from iro.core.config import StoreConfig
from iro.core.fsutil import ProcessId, atomic_write_text
from iro.core.store import (
    ENTRY_NAME,
    MANIFEST,
    RUNS,
    STORAGE_ERRNOS,
    Artifact,
    ArtifactCheck,
    ArtifactError,
    ArtifactStore,
    GcReport,
    checked_name,
    manifest_parents,
    referenced_closure,
    set_aside_hint,
)

log = logging.getLogger(__name__)

BLOBS = "blobs"
QUARANTINE = ".quarantine"
# `<cache>/.published/<stage>/<id>`: this machine saw the artifact published; a local hit then
# needs no request. Hidden, so the local store never takes it for a stage.
PUBLISHED = ".published"
ORIGIN = ".origin"  # `<cache>/.origin`: which URL a cache directory mirrors, for humans
# gc on a URL keeps what was written more recently than this: a run elsewhere may not have
# recorded it yet
GC_MIN_AGE_HOURS = 24.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# storage option names whose values must never reach a log or a message
_SECRET_NAME = re.compile(r"secret|token|password|passwd|credential|access_key|^key$", re.I)
# protocols whose first path component is a bucket (or container) that must exist beforehand
_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}
# a conditional put: fails with FileExistsError when the object exists (If-None-Match on S3)
_CREATE = {"mode": "create"}
_CREDENTIALS_HINT = (
    "credentials come from the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or AWS_PROFILE), never from the config"
)


def is_url(root: str | Path) -> bool:
    """Whether a store root names an object store rather than a local directory."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def open_store(store: StoreConfig | str | Path) -> ArtifactStore | RemoteArtifactStore:
    """The store for a config's `store` section (or a bare root): local for a directory or a
    file:// URL, published to the URL otherwise."""
    cfg = store if isinstance(store, StoreConfig) else StoreConfig(root=str(store))
    if not is_url(cfg.root):
        return ArtifactStore(cfg.root.removeprefix("file://"))
    return RemoteArtifactStore(cfg.root, cfg.cache, cfg.options)


def _secret_values(options: dict[str, Any]) -> list[str]:
    """Values of secret-looking options (nested too) and of the AWS secrets in the environment."""
    found = [os.environ.get(k, "") for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    for name, value in options.items():
        if isinstance(value, dict):
            found += _secret_values(value)
        elif _SECRET_NAME.search(str(name)) and value is not None:
            found.append(str(value))
    return [v for v in found if len(v) >= 4]


def _public_url(url: str) -> str:
    """`url` without user information (`s3://key:secret@bucket` forms)."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1", url, flags=re.I)


def _endpoint(options: dict[str, Any]) -> str | None:
    """The endpoint the options name (s3fs takes it at the top or in client_kwargs)."""
    client = options.get("client_kwargs")
    nested = client.get("endpoint_url") if isinstance(client, dict) else None
    return options.get("endpoint_url") or nested


def _cache_key(url: str, options: dict[str, Any]) -> str:
    """One cache directory per (URL, endpoint): two servers may hold buckets of the same name."""
    return hashlib.sha256(f"{url}\n{_endpoint(options) or ''}".encode()).hexdigest()[:16]


def _safe_file_name(name: Any) -> bool:
    """A manifest entry that stays inside the artifact directory when written."""
    if not isinstance(name, str) or not name or name == MANIFEST:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and all(part not in ("", ".", "..") for part in path.parts)


def _hash_stream(source: BinaryIO, sink: BinaryIO | None) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: source.read(1 << 20), b""):
        digest.update(block)
        if sink is not None:
            sink.write(block)
    return digest.hexdigest()


class RemoteArtifactStore:
    """ArtifactStore's interface over a URL, with a local working copy (see the module doc)."""

    def __init__(self, url: str, cache: str | Path, options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.local = ArtifactStore(Path(cache) / _cache_key(self.url, self.options))
        self._secrets = _secret_values(self.options)
        self._where = _public_url(self.url)
        self._endpoint = _public_url(str(_endpoint(self.options) or ""))
        self._probed = False
        with self._remote("open the filesystem"):
            self._fs, self._base = fsspec.core.url_to_fs(self.url, **self._fs_options())
        self._base = self._base.rstrip("/")

    def _fs_options(self) -> dict[str, Any]:
        """No shared instance and no listing cache: another machine changes the bucket."""
        return {"skip_instance_cache": True, "use_listings_cache": False, **self.options}

    def __repr__(self) -> str:
        return f"RemoteArtifactStore({self._where!r}, cache={str(self.local.root)!r})"

    # -- the local working copy: what readers and the pipeline see --

    @property
    def root(self) -> Path:
        """The local working copy's root (work directories and run records live there)."""
        return self.local.root

    def artifact_id(
        self, stage: str, version: int, config: dict[str, Any], parents: Sequence[Artifact]
    ) -> str:
        return self.local.artifact_id(stage, version, config, parents)

    def path_of(self, stage: str, artifact_id: str) -> Path:
        return self.local.path_of(stage, artifact_id)

    def run_lock(self, run_name: str) -> AbstractContextManager[None]:
        """This machine's run lock: publication across machines needs none (conditional put)."""
        return self.local.run_lock(run_name)

    def remove_stale_staging(self) -> list[Path]:
        return self.local.remove_stale_staging()

    def referenced(self) -> set[tuple[str, str]]:
        return self.local.referenced()

    # -- errors: one line naming the URL and what to set, never a secret --

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _failure(self, doing: str, err: BaseException) -> str:
        """Why a remote operation failed and which setting fixes it."""
        name = type(err).__name__
        detail = self._scrub(f"{name}: {err}")
        endpoint = self._endpoint or "unset, the provider's default"
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            fix = f"free space or make the working copy {self.root} writable (store.cache)"
        elif isinstance(err, ImportError):
            fix = "install the fsspec backend for this URL's protocol (s3fs for s3://)"
        elif "Credential" in name or "credentials" in str(err).lower():
            fix = _CREDENTIALS_HINT
        elif isinstance(err, PermissionError) or "AccessDenied" in str(err):
            fix = f"the credentials in the environment may not access it; {_CREDENTIALS_HINT}"
        elif isinstance(err, FileNotFoundError) and "bucket" in str(err).lower():
            fix = "create the bucket or correct store.root"
        else:
            fix = (
                f"is the server up? check store.options.endpoint_url (now {endpoint}) and that "
                f"the bucket exists (store.root); {_CREDENTIALS_HINT}"
            )
        return f"artifact store {self._where}: could not {doing} ({detail}); {fix}"

    @contextmanager
    def _remote(self, doing: str) -> Iterator[None]:
        """Turn any error of the remote filesystem into an ArtifactError naming the URL."""
        try:
            yield
        except ArtifactError:
            raise
        except Exception as err:
            raise ArtifactError(self._failure(doing, err)) from None

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
                        f"endpoint {self._endpoint or 'the default'}); create "
                        "it or correct store.root / store.options.endpoint_url"
                    ) from None
        self._probed = True

    # -- remote keys --

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

    def _remote_manifest(self, stage: str, artifact_id: str) -> bytes | None:
        """The published manifest's bytes, or None when the artifact is not published."""
        self.path_of(stage, artifact_id)  # checks the names
        self._probe()
        with self._remote(f"read the manifest of {stage}/{artifact_id}"):
            try:
                return self._fs.cat_file(self._manifest_key(stage, artifact_id))
            except FileNotFoundError:
                return None

    def _manifest_problem(
        self, stage: str, artifact_id: str, data: bytes
    ) -> tuple[dict[str, Any], str | None]:
        """The published manifest and the first thing that makes it unsafe to download."""
        try:
            manifest = json.loads(data)
            files = manifest["files"]
            named = (manifest["stage"], manifest["id"])
        except (ValueError, KeyError, TypeError) as err:
            return {}, f"{MANIFEST} is unreadable or incomplete ({type(err).__name__}: {err})"
        if named != (stage, artifact_id):
            return manifest, f"{MANIFEST} describes {named[0]}/{named[1]}"
        if not isinstance(files, dict):
            return manifest, f"{MANIFEST}: its 'files' is not a mapping"
        bad = [n for n, d in files.items() if not (_safe_file_name(n) and _SHA256.match(str(d)))]
        if bad:
            return manifest, f"{MANIFEST} lists an unsafe file entry {bad[0]!r}"
        return manifest, None

    def _parse_manifest(self, stage: str, artifact_id: str, data: bytes) -> dict[str, Any]:
        manifest, problem = self._manifest_problem(stage, artifact_id, data)
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
                        actual = _hash_stream(source, None)
                    else:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with dest.open("wb") as sink:
                            actual = _hash_stream(source, sink)
            except FileNotFoundError:
                return f"file {name} is missing (no {BLOBS}/{digest})"
        if actual != digest:
            return f"checksum mismatch for {name} (changed or damaged since it was published)"
        return None

    # -- finding and building --

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

    def create(
        self,
        stage: str,
        version: int,
        config: dict[str, Any],
        parents: Sequence[Artifact],
        build: Callable[[Path], dict[str, Any]],
        run_name: str | None = None,
    ) -> Artifact:
        """Find the artifact (here or published), else build it locally and publish it."""
        artifact_id = self.artifact_id(stage, version, config, parents)
        found = self.find(stage, artifact_id)
        if found is not None:
            return found
        built = self.local.create(stage, version, config, parents, build, run_name)
        return self._ensure_published(built)

    def _download(self, stage: str, artifact_id: str, data: bytes) -> Artifact:
        """Fetch a published artifact into staging, check every file, rename it into place."""
        manifest = self._parse_manifest(stage, artifact_id, data)
        target = self.path_of(stage, artifact_id)
        if (target / MANIFEST).is_file():  # another process of this machine was quicker
            return self.local.load(target)
        if target.exists():  # a directory without a manifest: the store never leaves one
            raise ArtifactError(f"{target} has no {MANIFEST}; {set_aside_hint(target)}")
        staging = self.local._new_staging(target)
        try:
            for name, digest in sorted(manifest["files"].items()):
                problem = self._blob_problem(stage, artifact_id, name, digest, staging / name)
                if problem is not None:
                    raise ArtifactError(self._published_damage(stage, artifact_id, problem))
            (staging / MANIFEST).write_bytes(data)
            staging.chmod(0o755)
            self._rename_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("downloaded %s/%s from %s", stage, artifact_id, self._where)
        self._mark_published(stage, artifact_id)
        return self.local.load(target)

    def _rename_into_place(self, staging: Path, target: Path) -> None:
        """The local store's atomic publication; another process of this machine may win."""
        try:
            staging.rename(target)
        except OSError:
            if self.local.find(target.parent.name, target.name) is None:
                raise
            shutil.rmtree(staging, ignore_errors=True)

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
        published, _ = self._manifest_problem(artifact.stage, artifact.id, theirs)
        keep = set(published.get("files", {}).values())
        for digest in set(artifact.manifest["files"].values()) - keep:
            try:
                self._fs.rm_file(self._blob_key(artifact.stage, artifact.id, digest))
            except Exception as err:  # only wasted space: never fail a run for it
                why = self._scrub(f"{type(err).__name__}: {err}")
                log.warning("could not remove an unpublished file of %s (%s)", artifact.id, why)

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

    # -- maintenance: the `iro store` commands --

    def _published(self) -> set[tuple[str, str]]:
        """(stage, id) of every published artifact."""
        return {key for key, entry in self._entries().items() if entry.published}

    def _remote_problem(self, stage: str, artifact_id: str, data: bytes) -> str | None:
        """What is wrong with the published copy (every file downloaded and hashed), if anything."""
        manifest, problem = self._manifest_problem(stage, artifact_id, data)
        for name, digest in sorted(manifest.get("files", {}).items() if problem is None else []):
            problem = self._blob_problem(stage, artifact_id, name, digest, None)
            if problem is not None:
                break
        return problem

    def verify(self) -> list[ArtifactCheck]:
        """Check every published artifact (downloading its files) and every local copy."""
        local = {(c.stage, c.id): c for c in self.local.verify()} if self.root.is_dir() else {}
        published = self._published()
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
        parts = PurePath(ref).parts[-2:]
        if len(parts) != 2 or not all(ENTRY_NAME.match(p) for p in parts) or parts[0] == RUNS:
            raise ArtifactError(f"{ref!r} does not name an artifact; give it as STAGE/ID")
        stage, artifact_id = parts
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
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = (QUARANTINE, stage, f"{artifact_id}.{stamp}")
        with self._remote(f"unpublish {stage}/{artifact_id}"):
            self._fs.pipe_file(self._key(*aside, MANIFEST), data)
            self._fs.rm_file(self._manifest_key(stage, artifact_id))
        log.info("unpublished %s/%s: its manifest is now in %s", stage, artifact_id, aside)
        return self._where_is(*aside)

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


def _artifact_object(parts: tuple[str, ...]) -> bool:
    """Whether a key (as parts under the URL) is an artifact's: `<stage>/<id>/manifest.json` or
    `<stage>/<id>/blobs/<sha256>`."""
    if len(parts) < 3 or parts[0] == RUNS or not all(map(ENTRY_NAME.match, parts[:2])):
        return False
    return parts[2:] == (MANIFEST,) or (
        len(parts) == 4 and parts[2] == BLOBS and bool(_SHA256.match(parts[3]))
    )


@dataclass
class _RemoteEntry:
    """The objects under one `<stage>/<id>` of a URL, as gc sees them."""

    keys: list[str] = field(default_factory=list)
    size: int = 0
    written: float = 0.0  # the newest object's time, epoch seconds
    published: bool = False  # its manifest is there


# what `open_store` returns: either store, with one interface
Store = ArtifactStore | RemoteArtifactStore
