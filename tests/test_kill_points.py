"""An artifact build killed with SIGKILL where atomicity matters leaves nothing visible.

`ArtifactStore.create` builds in a hidden staging directory named after its process, writes the
manifest there and renames the directory into place. Whatever instant a kill -9 strikes, then:
no artifact of that id is visible (`find` gives None, nothing is at its final path, `verify`
finds nothing damaged), earlier artifacts are untouched (same manifest mtimes and checksums), and
a rerun in a fresh process removes the dead process's staging (logging its pid) and ends with the
artifact an uninterrupted build makes, byte for byte.

Each kill is a real process (tests/kill_points_child.py, in its own session, killed with its
process group) stopped at one of three points: between two files of the build, after the manifest
is written and just before the rename into place, and part way through a 3 MiB file written in
chunks, at a byte offset drawn from KILL_POINTS_SEED (a fresh seed unless set in the environment;
a failure names both, so that it can be rerun).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iro.core.store.artifact import Artifact
from iro.core.store.local import ArtifactStore
from tests.kill_points_child import (
    BEFORE_RENAME,
    BETWEEN_FILES,
    BIG,
    CONFIG,
    FIRST,
    MANIFEST,
    MID_FILE,
    POINTS,
    STAGE,
    VERSION,
    artifact_files,
    write_artifact,
)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60
SEED = int(os.environ.get("KILL_POINTS_SEED", random.randrange(2**32)))

Digests = dict[str, tuple[int, str]]  # file name -> (size, sha256)


def digests(files: dict[str, bytes]) -> Digests:
    return {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}


def directory_digests(directory: Path) -> Digests:
    return digests({p.name: p.read_bytes() for p in directory.iterdir()})


def data_files(artifact: Artifact) -> Digests:
    """An artifact's files but its manifest (whose creation time differs from build to build)."""
    files = directory_digests(artifact.path)
    files.pop(MANIFEST)
    return files


def start(args: list[str], log: Path) -> subprocess.Popen:
    """The child in its own session, importing the store from this checkout (cwd)."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.kill_points_child", *args],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_at(root: Path, point: str, offset: int, tmp: Path, where: str) -> tuple[Path, int]:
    """Start a child held at `point`, SIGKILL its process group there; its staging directory
    and pid."""
    ready, log = tmp / "ready", tmp / "killed.log"
    hold = ["--hold", point, "--ready", str(ready), "--offset", str(offset)]
    proc = start([str(root), *hold], log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"never stopped {where} (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it has exited already
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, where
    return Path(ready.read_text()), proc.pid


def rerun(root: Path, tmp: Path, where: str) -> str:
    """Run the child to the end, without a hold; its log."""
    log = tmp / "rerun.log"
    proc = start([str(root)], log)
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the rerun after a kill {where} did not end in {TIMEOUT} s")
    text = log.read_text()
    assert proc.returncode == 0, f"the rerun after a kill {where} failed:\n{text[-3000:]}"
    return text


def verified(root: Path, where: str) -> dict[str, tuple[int, dict[str, str]]]:
    """`stage/id` -> (manifest mtime in ns, file checksums) of every artifact, after checking
    that `verify` (`iro store verify`) finds none damaged."""
    checks = ArtifactStore(root).verify()
    assert [(c.ref, c.problem) for c in checks if c.problem] == [], where
    return {
        c.ref: (
            (c.path / MANIFEST).stat().st_mtime_ns,
            json.loads((c.path / MANIFEST).read_text())["files"],
        )
        for c in checks
    }


def staging_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/.*") if p.is_dir())


def write_earlier(out: Path) -> dict[str, int]:
    (out / "earlier.txt").write_text("built before the kill\n")
    return {}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The artifact built without a kill: what every rerun must end with."""
    store = ArtifactStore(tmp_path_factory.mktemp("uninterrupted"))
    return store.create(STAGE, VERSION, CONFIG, [], write_artifact)


def in_staging_at_kill(point: str, offset: int) -> Digests:
    """What the killed build had written when it stopped at `point`."""
    files = artifact_files()
    if point == BETWEEN_FILES:
        return digests({FIRST: files[FIRST]})
    if point == MID_FILE:
        return digests({FIRST: files[FIRST], BIG: files[BIG][:offset]})
    return digests(files)  # BEFORE_RENAME: every file, and the manifest (checked apart)


@pytest.mark.parametrize("point", POINTS)
def test_a_build_killed_at_a_point_leaves_nothing_and_a_rerun_completes_it(
    point: str, uninterrupted: Artifact, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = ArtifactStore(root)
    store.create(STAGE, VERSION, {"earlier": 1}, [], write_earlier)
    store.create("other", VERSION, {"earlier": 1}, [], write_earlier)
    offset = random.Random(SEED).randrange(1, len(artifact_files()[BIG]))
    where = f"at {point}"
    if point == MID_FILE:
        where += f", {offset} bytes into {BIG} (KILL_POINTS_SEED={SEED})"
    earlier = verified(root, where)

    staging, pid = kill_at(root, point, offset, tmp_path, where)

    # nothing of that id is visible; earlier artifacts are untouched and nothing is damaged
    assert store.find(STAGE, uninterrupted.id) is None, where
    assert not store.path_of(STAGE, uninterrupted.id).exists(), where
    assert verified(root, where) == earlier, where
    # the killed process's files are in its own hidden staging directory, as far as it got
    assert staging.parent == root / STAGE and f".{pid}-" in staging.name, where
    staged = directory_digests(staging)
    if point == BEFORE_RENAME:
        manifest = json.loads((staging / MANIFEST).read_text())
        assert manifest["files"] == uninterrupted.manifest["files"], where
        staged.pop(MANIFEST)
    assert staged == in_staging_at_kill(point, offset), where

    log = rerun(root, tmp_path, where)

    assert f"staging left by process {pid}" in log, f"{where}:\n{log}"
    assert staging_dirs(root) == [], where
    rebuilt = store.find(STAGE, uninterrupted.id)
    assert rebuilt is not None, where
    assert rebuilt.manifest["files"] == uninterrupted.manifest["files"], where
    assert data_files(rebuilt) == data_files(uninterrupted) == digests(artifact_files()), where
    now = verified(root, where)
    assert {ref: now[ref] for ref in earlier} == earlier, where
    assert set(now) == {*earlier, f"{STAGE}/{uninterrupted.id}"}, where
