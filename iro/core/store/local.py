"""Content-addressed, immutable artifact store.

An artifact is a directory ``<root>/<stage>/<id>/`` holding its files and a ``manifest.json``:
stage, id, parent ids, the config slice that produced it, the code version (package version and
git commit), metrics, file checksums and creation time. The id hashes (stage, stage version,
config slice, parent ids), so the same inputs give the same id (a rerun reuses the artifact) and
a changed config gives a new artifact beside the old one, never over it. Bump a stage's version
when its output changes meaning, so old artifacts are not reused by mistake.

Artifacts are written into a hidden staging sibling named after the writing process and renamed
into place, so a crash leaves either nothing or a complete artifact; a staging directory whose
process is gone (kill -9, power loss) is removed when a run lock is taken, before a build and by
`gc`. Readers verify the manifest against the files (names, checksums, nothing extra), so a
damaged artifact is refused, naming the file, never used; `quarantine` sets it aside so that the
next run rebuilds it. `gc` removes what no run record references, and work directories (WORK)
that no live builder holds once their artifact is published or they have lain untouched a day.

What this store shares with `RemoteArtifactStore` is written once beside it: the artifact's types
(iro.core.store.artifact), the manifest checks (artifact_checks), references and quarantine names
(artifact_refs), ids and `create` (store_base); `Store` (store_protocol) is the interface of both.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from iro.core.fsutil import (
    LockBusyError,
    ProcessId,
    atomic_write_json,
    directory_lock,
    lock_holder,
    sha256_file,
)
from iro.core.store.artifact import (
    ENTRY_NAME,
    MANIFEST,
    QUARANTINE,
    RUNS,
    STORAGE_ERRNOS,
    Artifact,
    ArtifactCheck,
    ArtifactError,
    GcReport,
    checked_name,
    set_aside_hint,
)
from iro.core.store.base import BuildSpec, StoreBase
from iro.core.store.checks import first_file_problem, manifest_problem, unreadable
from iro.core.store.refs import (
    artifact_ref,
    manifest_parents,
    quarantine_name,
    referenced_closure,
)

log = logging.getLogger(__name__)

# `<root>/.work/<stage>/<id>/`: a build's state that must survive a killed process (the value
# trainer's checkpoints), unlike its staging directory. Its builder holds `<dir>/.lock` (fsutil's
# directory_lock) while it works and removes the directory once the artifact is published. Hidden,
# so the store never takes it for a stage. The pipeline's runner uses this one definition.
WORK = ".work"
WORK_LOCK = ".lock"
# a work directory nobody holds and nothing touched for this long was abandoned: gc removes it
ABANDONED_WORK_AGE_S = 24 * 3600
# `.<id>.<pid>-<start>@<host>.<random>`: a staging directory and the process that writes it
STAGING = re.compile(r"^\.[0-9a-f]+\.(?P<owner>\d+-\d+@[A-Za-z0-9-]*)\.[a-z0-9_]+$")
# `.<id>.<random>`, written by versions that did not name the owner: removed by gc once old
LEGACY_STAGING = re.compile(r"^\.[0-9a-f]{16}\.[a-z0-9_]{8}$")
LEGACY_STAGING_AGE_S = 24 * 3600


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
    return {"package": package, **_git_state(Path(__file__).resolve().parents[3])}


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


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _newest_mtime(path: Path) -> float:
    return max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])


def _old_legacy_staging(path: Path) -> bool:
    """An unnamed staging directory (older versions) untouched for a day: surely abandoned."""
    if not (LEGACY_STAGING.match(path.name) and path.is_dir()):
        return False
    return time.time() - _newest_mtime(path) > LEGACY_STAGING_AGE_S


def _lock_held(lock_path: Path) -> bool:
    """Whether a live process holds the `directory_lock` at `lock_path` (an flock, dropped by the
    kernel when its holder dies). Probed without an owner record, so nothing beside it changes."""
    if not lock_path.is_file():
        return False
    probe = FileLock(lock_path)
    try:
        probe.acquire(blocking=False)
    except Timeout:
        return True
    probe.release()
    return False


def _remove_out_of_sight(path: Path) -> None:
    """Rename `path` to a hidden `.<name>.<owner>.gc` first, then remove it: a gc killed midway
    leaves no half artifact or work directory, only what looks like staging of a dead process,
    which the next cleanup removes."""
    doomed = path.with_name(f".{path.name}.{ProcessId.current().tag}.gc")
    path.rename(doomed)
    shutil.rmtree(doomed)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{what} {path} is unreadable ({err})") from err


def _storage_failure(err: OSError, directory: Path) -> bool:
    """A full or read-only store, rather than a build's own error (say, a missing input)."""
    if err.errno in STORAGE_ERRNOS:
        return True
    inside = isinstance(err.filename, str) and Path(err.filename).is_relative_to(directory)
    return err.errno in (errno.EACCES, errno.EPERM) and inside


class ArtifactStore(StoreBase):
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_of(self, stage: str, artifact_id: str) -> Path:
        return self.root / checked_name(stage, "stage") / checked_name(artifact_id, "artifact id")

    def find(self, stage: str, artifact_id: str) -> Artifact | None:
        """The finished artifact with this id, verified, or None if it was never completed."""
        path = self.path_of(stage, artifact_id)
        if not (path / MANIFEST).is_file():
            return None
        return self.load(path)

    def load(self, path: str | Path) -> Artifact:
        """The artifact at `path`, after checking its files against its manifest.

        Anything that does not match (a missing, extra, truncated or changed file, a manifest
        that is unreadable or describes another artifact) raises ArtifactError naming the file:
        a damaged artifact is never used.
        """
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise ArtifactError(f"no artifact at {path} (missing {MANIFEST})")
        manifest, problem = self._inspect(path)
        if problem is not None:
            raise ArtifactError(f"artifact {path}: {problem}; {set_aside_hint(path)}")
        return Artifact(manifest["stage"], manifest["id"], path, manifest)

    def _inspect(self, path: Path) -> tuple[dict[str, Any], str | None]:
        """The manifest of the artifact at `path` and the first thing wrong with it, if any."""
        try:
            data = (path / MANIFEST).read_text()
        except FileNotFoundError:
            return {}, f"{MANIFEST} is missing"
        except (OSError, ValueError) as err:  # ValueError: not UTF-8 text
            return {}, unreadable(err)
        manifest, problem = manifest_problem(data, path.parent.name, path.name)
        if problem is not None:
            return manifest, problem
        files = manifest["files"]
        on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        on_disk.discard(MANIFEST)
        missing, extra = sorted(set(files) - on_disk), sorted(on_disk - set(files))
        if missing:
            return manifest, f"file {missing[0]} is missing"
        if extra:
            return manifest, f"file {extra[0]} is not listed in its {MANIFEST}"

        def file_problem(name: str, digest: str) -> str | None:
            try:
                actual = sha256_file(path / name)
            except OSError as err:
                return f"file {name} cannot be read ({err})"
            if actual != digest:
                return f"checksum mismatch for {name} (changed or damaged since written)"
            return None

        return manifest, first_file_problem(files, file_problem)

    def _build(self, spec: BuildSpec) -> Artifact:
        """Run the build in a staging directory, write the manifest, rename it into place.

        A full or unwritable store raises ArtifactError naming the directory; nothing partial is
        left visible and earlier artifacts are untouched.
        """
        target = self.path_of(spec.stage, spec.artifact_id)
        try:
            with self.staged(target) as staging:
                started = time.time()
                metrics = spec.build(staging)
                files = {
                    p.relative_to(staging).as_posix(): sha256_file(p)
                    for p in sorted(staging.rglob("*"))
                    if p.is_file()
                }
                manifest = {
                    "stage": spec.stage,
                    "id": spec.artifact_id,
                    "stage_version": spec.version,
                    "parents": [{"stage": p.stage, "id": p.id} for p in spec.parents],
                    "config": spec.config,
                    "metrics": metrics,
                    "files": files,
                    "code_version": code_version(),
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.time() - started, 3),
                    "created_by_run": spec.run_name,
                }
                atomic_write_json(staging / MANIFEST, manifest)
        except OSError as err:
            if _storage_failure(err, target.parent):
                raise ArtifactError(
                    f"could not write {spec.stage} artifact {spec.artifact_id} into "
                    f"{target.parent} ({err}); nothing of it was kept and earlier artifacts are "
                    f"untouched. Free space or make {self.root} writable (store.root in the "
                    "config), then rerun"
                ) from err
            raise
        return self.load(target)

    @contextmanager
    def staged(self, target: Path) -> Iterator[Path]:
        """A fresh staging directory for the artifact at `target`, renamed into place once the
        block has filled it (files and manifest) and removed if the block fails.

        The one way anything enters the store, so a crash leaves nothing or a whole artifact:
        builds use it, and so does `RemoteArtifactStore` for downloads. The caller has found no
        artifact at `target`; a directory there without a manifest (the store never leaves one)
        raises. If another process of this machine renames the same artifact into place first,
        theirs is kept: an id has one content.
        """
        if target.exists():
            raise ArtifactError(f"{target} has no {MANIFEST}; {set_aside_hint(target)}")
        staging = self._new_staging(target)
        try:
            yield staging
            staging.chmod(0o755)
            try:
                staging.rename(target)
            except OSError:
                if self.find(target.parent.name, target.name) is None:
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _new_staging(self, target: Path) -> Path:
        """A fresh hidden directory beside `target`, named after this process (see STAGING)."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._remove_staging(self._stale_staging([target.parent]))
            prefix = f".{target.name}.{ProcessId.current().tag}."
            return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        except OSError as err:
            raise ArtifactError(
                f"cannot write to the artifact store at {target.parent} ({err}); make it "
                "writable or free space (store.root in the config); earlier artifacts are untouched"
            ) from err

    # -- staging directories left by processes that died --

    def _stage_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for p in self.root.iterdir()
            if p.is_dir() and ENTRY_NAME.match(p.name) and p.name != RUNS
        )

    def _stale_staging(
        self, stage_dirs: Sequence[Path], include_legacy: bool = False
    ) -> list[tuple[Path, str]]:
        """Staging directories whose writer is gone, each with who it was; never a live one's.

        A writer on another host cannot be checked and is left alone. Unnamed (legacy) staging
        directories count only with `include_legacy`, and only once a day old.
        """
        stale = []
        for stage_dir in stage_dirs:
            for path in sorted(stage_dir.glob(".*")):
                match = STAGING.match(path.name)
                owner = ProcessId.parse(match["owner"]) if match else None
                if owner is not None and path.is_dir() and owner.running() is False:
                    stale.append((path, owner.describe()))
                elif include_legacy and _old_legacy_staging(path):
                    stale.append((path, "an earlier version, over a day ago"))
        return stale

    def _remove_staging(self, stale: Sequence[tuple[Path, str]]) -> None:
        for path, owner in stale:
            shutil.rmtree(path, ignore_errors=True)
            log.warning("removed %s: staging left by %s, which no longer runs", path, owner)

    def remove_stale_staging(self) -> list[Path]:
        """Remove every staging directory whose writing process has died (kill -9, a crash)."""
        stale = self._stale_staging(self._stage_dirs())
        self._remove_staging(stale)
        return [path for path, _ in stale]

    # -- the run index: which artifacts make up a named run, for humans and later steps --

    def run_dir(self, run_name: str) -> Path:
        return self.root / RUNS / checked_name(run_name, "run name")

    @property
    def _gc_lock(self) -> Path:
        return self.root / ".gc.lock"

    @contextmanager
    def run_lock(self, run_name: str) -> Iterator[None]:
        """Serialise work on one named run across processes; different runs never wait.

        Artifacts are immutable and written atomically, so a race could not corrupt them, but two
        processes building the same stage would waste the machine; the second one waits and then
        finds everything reused. A lock whose holder died is taken over (fsutil logs it); a run
        also waits for a `gc` in progress, and removes staging left by dead processes.
        """

        def waiting(holder: str) -> None:
            log.info("run %r is busy in %s; waiting for it to finish", run_name, holder)

        def collecting(holder: str) -> None:
            log.info("store %s is being garbage-collected by %s; waiting", self.root, holder)

        with directory_lock(self.run_dir(run_name) / ".lock", on_wait=waiting):
            with directory_lock(self._gc_lock, on_wait=collecting):
                pass  # holding our run lock, no gc can start; none is running now
            try:
                self.remove_stale_staging()
            except OSError as err:  # tidying up must not stop a run
                log.warning("could not remove stale staging directories: %s", err)
            yield

    def record_run_step(self, run_name: str, name: str, data: dict[str, Any]) -> Path:
        path = self.run_dir(run_name) / f"{name}.json"
        atomic_write_json(path, data)
        return path

    # -- maintenance: verify, set aside, collect garbage (the `iro store` commands) --

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise ArtifactError(f"no artifact store at {self.root} (see store.root in the config)")

    def _artifact_dirs(self) -> Iterator[tuple[str, str, Path]]:
        for stage_dir in self._stage_dirs():
            for path in sorted(stage_dir.iterdir()):
                if path.is_dir() and ENTRY_NAME.match(path.name):
                    yield stage_dir.name, path.name, path

    def verify(self) -> list[ArtifactCheck]:
        """Check every artifact of the store against its manifest, as `load` does."""
        self._require_root()
        return [
            ArtifactCheck(stage, artifact_id, path, self._inspect(path)[1])
            for stage, artifact_id, path in self._artifact_dirs()
        ]

    def quarantine(self, ref: str) -> tuple[Path, str | None]:
        """Move artifact `stage/id` (or its path) into `<root>/.quarantine/`.

        The next run finds no artifact with that id and rebuilds it; the moved copy is kept for
        inspection. Returns where it went and what was wrong with it (None: it verified).
        """
        self._require_root()
        stage, artifact_id = artifact_ref(ref)
        path = self.path_of(stage, artifact_id)
        if not path.is_dir():
            raise ArtifactError(f"no artifact {stage}/{artifact_id} in {self.root}")
        problem = self._inspect(path)[1]
        name = quarantine_name(artifact_id)
        destination = self.root / QUARANTINE / stage / name
        suffix = 1
        while destination.exists():
            suffix += 1
            destination = destination.with_name(f"{name}-{suffix}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        path.rename(destination)
        log.info(
            "set aside %s/%s in %s (%s)", stage, artifact_id, destination, problem or "it verified"
        )
        return destination, problem

    # -- work directories (WORK) left by builds that published or were abandoned --

    def _work_stage_dirs(self) -> list[Path]:
        work = self.root / WORK
        if not work.is_dir():
            return []
        return sorted(p for p in work.iterdir() if p.is_dir() and ENTRY_NAME.match(p.name))

    def _stale_work(self) -> list[tuple[Path, str]]:
        """Work directories of no more use, each with why: their artifact exists (a builder killed
        between publishing and tidying up) or nothing touched them for ABANDONED_WORK_AGE_S. One
        whose lock a live process holds is never among them, however old."""
        stale = []
        for stage_dir in self._work_stage_dirs():
            for path in sorted(stage_dir.iterdir()):
                if not (path.is_dir() and ENTRY_NAME.match(path.name)):
                    continue
                try:
                    if (self.root / stage_dir.name / path.name).is_dir():
                        why = "its artifact is published"
                    elif time.time() - _newest_mtime(path) > ABANDONED_WORK_AGE_S:
                        why = "abandoned, untouched for over a day"
                    else:
                        continue
                    if _lock_held(path / WORK_LOCK):
                        log.info(
                            "kept work directory %s: held by %s",
                            path,
                            lock_holder(path / WORK_LOCK),
                        )
                        continue
                except OSError:  # removed meanwhile, by its builder once it published
                    continue
                stale.append((path, why))
        return stale

    def _remove_work(self, stale: Sequence[tuple[Path, str]]) -> list[Path]:
        """Remove these work directories, each under its lock (one taken meanwhile is kept) and
        removed out of sight (`_remove_out_of_sight`); returns those removed."""
        removed = []
        for path, why in stale:
            try:
                with directory_lock(path / WORK_LOCK, wait=False):
                    _remove_out_of_sight(path)
            except LockBusyError as err:
                log.info("kept work directory %s: %s", path, err)
                continue
            log.info("removed work directory %s: %s", path, why)
            removed.append(path)
        return removed

    def _run_records(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"{RUNS}/*/*.json") if not p.name.startswith("."))

    def referenced(self) -> set[tuple[str, str]]:
        """(stage, id) of every artifact a run record names, and of their parents, transitively.

        A record or a referenced manifest that cannot be read raises: what it references is then
        unknown, and gc must not guess.
        """
        existing = {(stage, artifact_id) for stage, artifact_id, _ in self._artifact_dirs()}
        records = [_read_json(record, "run record") for record in self._run_records()]
        return referenced_closure(records, existing, lambda key: _parents(self.path_of(*key)))

    def gc(self, dry_run: bool = False) -> GcReport:
        """Remove every artifact no run references, staging left by dead processes, and work
        directories of no more use (`_stale_work`: published or abandoned, never a held one).

        "Referenced" is `referenced()`. gc holds the store's gc lock and every run's lock, so it
        refuses while a run is in progress (that run's newest artifacts are not recorded yet)
        and a run started meanwhile waits for it. `dry_run` only reports.
        """
        self._require_root()
        with ExitStack() as locks:
            try:
                for lock in [self._gc_lock, *sorted(self.root.glob(f"{RUNS}/*/.lock"))]:
                    locks.enter_context(directory_lock(lock, wait=False))
            except LockBusyError as err:
                raise ArtifactError(
                    f"not collecting garbage now: {err}; a run in progress has artifacts that "
                    "it has not recorded yet. Run gc again once it has finished"
                ) from err
            keep = self.referenced()
            work = self._stale_work()  # "published" judged before unreferenced artifacts go
            report = GcReport(runs=len({r.parent for r in self._run_records()}))
            for stage, artifact_id, path in self._artifact_dirs():
                if (stage, artifact_id) in keep:
                    report.kept += 1
                else:
                    report.artifacts.append(path)
                    report.bytes += _tree_size(path)
            # staging, and work directories half removed by a gc that was killed (`.<id>.<owner>.gc`)
            stale = self._stale_staging(
                [*self._stage_dirs(), *self._work_stage_dirs()], include_legacy=True
            )
            report.staging = [path for path, _ in stale]
            report.bytes += sum(_tree_size(path) for path in report.staging)
            sizes = {path: _tree_size(path) for path, _ in work}
            report.work = list(sizes)
            if not dry_run:
                for path in report.artifacts:
                    self._discard(path)
                self._remove_staging(stale)
                report.work = self._remove_work(work)
            report.bytes += sum(sizes[path] for path in report.work)
        return report

    def _discard(self, path: Path) -> None:
        """Remove an artifact no run references."""
        _remove_out_of_sight(path)
        log.info("removed %s: no run references it", path)


def _parents(path: Path) -> set[tuple[str, str]]:
    """(stage, id) of the parents the manifest of the artifact at `path` names."""
    manifest = path / MANIFEST
    try:
        return manifest_parents(json.loads(manifest.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(
            f"{manifest} is unreadable ({type(err).__name__}: {err}), so which artifacts it "
            f"depends on is unknown; {set_aside_hint(path)}"
        ) from err
