"""The artifact store's guarantees under faults: killed writers, concurrent processes, damaged
files, a full or read-only disk, and the `iro store` maintenance commands.

Concurrency and kill tests use real processes (multiprocessing, spawn), never threads: a lock or
a staging directory must survive what a real second process, or a kill -9, does to it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iro.core.fsutil import ProcessId, directory_lock
from iro.core.store.local import WORK, ArtifactError, ArtifactStore

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 60


def build_table(out: Path) -> dict:
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(out / "table.parquet")
    return {"rows": 3}


def wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def staging_dirs(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.glob(".*") if p.is_dir())


# -- what the child processes run (module level, so that spawn can import them) --


def _log_to(path: str) -> None:
    logging.basicConfig(filename=path, level=logging.INFO, format="%(name)s %(message)s")


def child_build(root: str, work: str, name: str, run: str | None, go: bool) -> None:
    """Create `score` artifact {"a": 1}: the build writes half a table, says `<name>.ready`, and
    waits for `go` (or forever: the test kills it). Writes the result's id to `<name>.id`."""
    _log_to(f"{work}/{name}.log")
    work_dir = Path(work)
    store = ArtifactStore(root)

    def build(out: Path) -> dict:
        (out / "table.parquet").write_bytes(b"PAR1 half a table")
        with (work_dir / "builds.log").open("a") as f:
            f.write(f"{name}\n")
        (work_dir / f"{name}.ready").touch()
        while not (go and (work_dir / "go").exists()):
            time.sleep(0.02)
        return build_table(out)

    def create():
        return store.create("score", 1, {"a": 1}, [], build, run_name=run)

    if run is None:
        artifact = create()
    else:
        with store.run_lock(run):
            artifact = create()
    (work_dir / f"{name}.id").write_text(artifact.id)


def child_hold_run_lock(root: str, work: str) -> None:
    """Hold run 'demo''s lock and say `held`, until killed."""
    with ArtifactStore(root).run_lock("demo"):
        (Path(work) / "held").touch()
        time.sleep(TIMEOUT * 10)


def child_hold_work_lock(work_dir: str, ready: str) -> None:
    """Hold the lock of a work directory, as a value trainer does, and say `ready`, until killed."""
    with directory_lock(Path(work_dir) / ".lock"):
        Path(ready).touch()
        time.sleep(TIMEOUT * 10)


def start(target, *args) -> multiprocessing.process.BaseProcess:
    process = SPAWN.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def kill(process: multiprocessing.process.BaseProcess) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.join(TIMEOUT)


# -- staging directories of dead and live processes --


def test_staging_of_a_killed_build_is_removed_and_a_live_ones_never(tmp_path, caplog):
    store, work = ArtifactStore(tmp_path / "store"), tmp_path / "work"
    work.mkdir()
    child = start(child_build, str(store.root), str(work), "a", None, False)
    try:
        wait_for((work / "a.ready").exists, "the child to be mid-build")
        (staging,) = staging_dirs(store.root / "score")
        assert f".{child.pid}-" in staging.name  # the owner is in the name
        assert store.remove_stale_staging() == [] and staging.is_dir()  # live: kept
        with store.run_lock("other"):
            assert staging.is_dir()
    finally:
        kill(child)
    caplog.set_level(logging.WARNING, logger="iro.core.store.local")
    with store.run_lock("demo"):  # dead now: taking a run lock removes it, with a log line
        assert not staging.exists()
    assert f"staging left by process {child.pid}" in caplog.text
    artifact = store.create("score", 1, {"a": 1}, [], build_table)
    assert artifact.table()["x"].tolist() == [1, 2, 3]
    assert list((store.root / "score").iterdir()) == [artifact.path]


def test_create_removes_dead_staging_of_its_stage_and_keeps_what_it_cannot_check(tmp_path):
    store = ArtifactStore(tmp_path)
    me = ProcessId.current()
    reused = ProcessId(me.pid, me.start + 1, me.host)  # our pid, another start: pid reused
    elsewhere = ProcessId(me.pid, me.start, "another-host")
    (tmp_path / "score").mkdir()
    dead = tmp_path / "score" / f".0123456789abcdef.{reused.tag}.x1y2z3_a"
    remote = tmp_path / "score" / f".0123456789abcdef.{elsewhere.tag}.x1y2z3_b"
    legacy = tmp_path / "score" / ".0123456789abcdef.x1y2z3_c"
    for path in (dead, remote, legacy):
        path.mkdir()
        (path / "table.parquet").write_bytes(b"half")
    store.create("score", 1, {"a": 1}, [], build_table)
    assert not dead.exists() and remote.is_dir() and legacy.is_dir()
    store.gc(dry_run=False)  # a fresh legacy staging dir may belong to a running old version
    assert legacy.is_dir()
    day_ago = time.time() - 2 * 24 * 3600
    for path in (legacy / "table.parquet", legacy):
        os.utime(path, (day_ago, day_ago))
    assert store.gc().staging == [legacy] and not legacy.exists() and remote.is_dir()


# -- locks --


def test_a_dead_holders_run_lock_is_taken_over_with_a_log_line(tmp_path, caplog):
    store, work = ArtifactStore(tmp_path / "store"), tmp_path / "work"
    work.mkdir()
    child = start(child_hold_run_lock, str(store.root), str(work))
    wait_for((work / "held").exists, "the child to hold the lock")
    kill(child)
    caplog.set_level(logging.INFO)
    acquired = threading.Event()

    def take() -> None:
        with store.run_lock("demo"):
            acquired.set()

    threading.Thread(target=take, daemon=True).start()
    assert acquired.wait(TIMEOUT), "the lock of a killed process was not taken over"
    assert f"was left by process {child.pid}" in caplog.text and "taking it over" in caplog.text
    assert "is busy" not in caplog.text


def test_a_live_holder_makes_the_second_process_wait_and_the_work_is_done_once(tmp_path):
    store, work = ArtifactStore(tmp_path / "store"), tmp_path / "work"
    work.mkdir()
    first = start(child_build, str(store.root), str(work), "a", "demo", True)
    wait_for((work / "a.ready").exists, "the first process to be mid-build")
    second = start(child_build, str(store.root), str(work), "b", "demo", True)
    waiting = f"run 'demo' is busy in process {first.pid}"
    log_b = work / "b.log"
    logged = lambda: log_b.exists() and waiting in log_b.read_text()  # noqa: E731
    wait_for(lambda: logged() or not second.is_alive(), "the second to wait")
    assert logged() and second.is_alive()
    assert not (work / "b.ready").exists()  # it waits on the lock, not building
    (work / "go").touch()
    for process in (first, second):
        process.join(TIMEOUT)
        assert process.exitcode == 0
    assert (work / "builds.log").read_text() == "a\n"  # built once, reused by the second
    assert (work / "a.id").read_text() == (work / "b.id").read_text()
    assert [c.problem for c in store.verify()] == [None] and not staging_dirs(store.root / "score")


def test_two_processes_building_one_artifact_at_once_end_with_one_sound_artifact(tmp_path):
    store, work = ArtifactStore(tmp_path / "store"), tmp_path / "work"
    work.mkdir()
    # different runs (no common lock), same stage config: both build the same artifact
    children = [start(child_build, str(store.root), str(work), n, n, True) for n in "ab"]
    wait_for(lambda: (work / "a.ready").exists() and (work / "b.ready").exists(), "both builds")
    (work / "go").touch()
    for process in children:
        process.join(TIMEOUT)
        assert process.exitcode == 0
    assert sorted((work / "builds.log").read_text().split()) == ["a", "b"]
    assert (work / "a.id").read_text() == (work / "b.id").read_text()
    (artifact,) = (store.root / "score").iterdir()  # one artifact, no staging left
    assert store.load(artifact).table()["x"].tolist() == [1, 2, 3]


# -- damaged artifacts are detected on read, named, never used --


def build_model(out: Path) -> dict:
    from safetensors.numpy import save_file

    save_file({"w": np.arange(8, dtype=np.float32)}, str(out / "model.safetensors"))
    return build_table(out)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(change):
    def damage(artifact_dir: Path) -> None:
        manifest = json.loads((artifact_dir / "manifest.json").read_text())
        change(manifest)
        (artifact_dir / "manifest.json").write_text(json.dumps(manifest))

    return damage


DAMAGES = {
    "truncated parquet": (lambda p: truncate(p / "table.parquet"), "mismatch for table.parquet"),
    "flipped byte in safetensors": (
        lambda p: flip_last_byte(p / "model.safetensors"),
        "checksum mismatch for model.safetensors",
    ),
    "missing file": (lambda p: (p / "table.parquet").unlink(), "file table.parquet is missing"),
    "file not in the manifest": (
        lambda p: (p / "extra.bin").write_bytes(b"x"),
        "file extra.bin is not listed in its manifest.json",
    ),
    "manifest checksum changed": (
        edit_manifest(lambda m: m["files"].update({"table.parquet": "0" * 64})),
        "checksum mismatch for table.parquet",
    ),
    "manifest of another artifact": (
        edit_manifest(lambda m: m.update(id="feedfacefeedface")),
        "manifest.json describes score/feedfacefeedface",
    ),
    "truncated manifest": (lambda p: truncate(p / "manifest.json"), "manifest.json is unreadable"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damage_is_detected_on_read_naming_the_file_and_never_used(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    artifact = store.create("score", 1, {}, [], build_model)
    do_damage, message = DAMAGES[damage]
    do_damage(artifact.path)
    before = {p.name: p.read_bytes() for p in artifact.path.iterdir()}
    with pytest.raises(ArtifactError, match=message) as error:
        store.find("score", artifact.id)
    assert str(artifact.path) in str(error.value)
    assert f"iro store quarantine score/{artifact.id}" in str(error.value)
    calls = []
    with pytest.raises(ArtifactError, match=message):  # not reused, and not silently rebuilt
        store.create("score", 1, {}, [], lambda out: calls.append(out) or build_model(out))
    assert not calls and {p.name: p.read_bytes() for p in artifact.path.iterdir()} == before
    (check,) = store.verify()
    assert check.ref == f"score/{artifact.id}" and message in check.problem


def test_a_directory_without_manifest_in_the_way_is_named_not_built_over(tmp_path):
    store = ArtifactStore(tmp_path)
    in_the_way = store.path_of("score", store.artifact_id("score", 1, {}, []))
    in_the_way.mkdir(parents=True)
    with pytest.raises(ArtifactError, match=f"{in_the_way} has no manifest.json"):
        store.create("score", 1, {}, [], build_table)
    assert list(in_the_way.parent.iterdir()) == [in_the_way]


# -- a full or unwritable store --


@contextlib.contextmanager
def unwritable(directory: Path):
    """`directory` read-only for this account. Permissions do not bind root, so as root the
    directory is also made immutable (chattr +i), which binds every account."""
    directory.chmod(0o555)
    immutable = False
    try:
        if os.access(directory, os.W_OK):
            immutable = subprocess.run(["chattr", "+i", str(directory)]).returncode == 0
            if not immutable:
                pytest.skip("root writes into read-only directories and chattr +i is refused")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


def test_a_read_only_store_gives_a_clear_error_and_keeps_earlier_artifacts(tmp_path):
    store = ArtifactStore(tmp_path)
    earlier = store.create("score", 1, {"a": 1}, [], build_table)
    stage_dir = tmp_path / "score"
    with (
        unwritable(stage_dir),
        pytest.raises(ArtifactError, match=f"cannot write to the artifact store at {stage_dir}"),
    ):
        store.create("score", 1, {"a": 2}, [], build_table)
    assert store.load(earlier.path).table()["x"].tolist() == [1, 2, 3]
    assert list(stage_dir.iterdir()) == [earlier.path]


def test_a_stage_path_that_is_a_file_gives_a_clear_error(tmp_path):
    store = ArtifactStore(tmp_path)
    earlier = store.create("score", 1, {"a": 1}, [], build_table)
    (tmp_path / "value").write_text("not a directory")
    with pytest.raises(
        ArtifactError, match=f"cannot write to the artifact store at {tmp_path}/value"
    ):
        store.create("value", 1, {}, [earlier], build_table)
    assert [c.problem for c in store.verify()] == [None]


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_disk_full_while_building_leaves_nothing_partial(tmp_path):
    store = ArtifactStore(tmp_path)
    earlier = store.create("score", 1, {"a": 1}, [], build_table)

    def fill_the_disk(out: Path) -> dict:
        (out / "table.parquet").write_bytes(b"PAR1 half")
        raise no_space(out / "table.parquet")

    with pytest.raises(ArtifactError, match="No space left on device") as error:
        store.create("score", 1, {"a": 2}, [], fill_the_disk)
    assert str(tmp_path / "score") in str(error.value) and "earlier artifacts" in str(error.value)
    assert list((tmp_path / "score").iterdir()) == [earlier.path]
    assert [c.problem for c in store.verify()] == [None]


def test_disk_full_while_writing_the_manifest_leaves_nothing_partial(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    earlier = store.create("score", 1, {"a": 1}, [], build_table)

    def full(path, data):
        raise no_space(path)

    monkeypatch.setattr("iro.core.store.local.atomic_write_json", full)
    with pytest.raises(ArtifactError, match="No space left on device"):
        store.create("score", 1, {"a": 2}, [], build_table)
    assert list((tmp_path / "score").iterdir()) == [earlier.path]


def test_a_builds_own_errors_are_not_reported_as_a_full_store(tmp_path):
    def missing_input(out: Path) -> dict:
        raise FileNotFoundError(errno.ENOENT, "No such file", "/data/prompts.jsonl")

    with pytest.raises(FileNotFoundError):
        ArtifactStore(tmp_path).create("score", 1, {}, [], missing_input)


# -- verify, quarantine and gc, through the CLI --


def run_cli(*args: str) -> int:
    from iro.app.cli import main

    return main(["store", *args])


def test_verify_prints_each_artifact_and_fails_when_one_is_corrupt(tmp_path, capsys):
    store = ArtifactStore(tmp_path)
    good = store.create("score", 1, {"a": 1}, [], build_table)
    bad = store.create("score", 1, {"a": 2}, [], build_table)
    assert run_cli("verify", "--root", str(tmp_path)) == 0
    assert "2 artifacts: 2 ok, 0 corrupt" in capsys.readouterr().out
    truncate(bad.path / "table.parquet")
    assert run_cli("verify", "--root", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert f"ok       score/{good.id}" in out
    assert f"CORRUPT  score/{bad.id}  checksum mismatch for table.parquet" in out
    assert "2 artifacts: 1 ok, 1 corrupt" in out and f"quarantine score/{bad.id}" in out
    config = tmp_path / "run.yaml"
    config.write_text(f"store:\n  root: {tmp_path}\n")
    assert run_cli("verify", "--config", str(config)) == 1
    assert run_cli("verify", "--root", str(tmp_path / "nowhere")) == 2
    assert "no artifact store at" in capsys.readouterr().err


def test_quarantine_sets_a_damaged_artifact_aside_and_the_next_run_rebuilds_it(tmp_path, capsys):
    store = ArtifactStore(tmp_path)
    bad = store.create("score", 1, {"a": 1}, [], build_table)
    truncate(bad.path / "table.parquet")
    assert run_cli("quarantine", f"score/{bad.id}", "--root", str(tmp_path)) == 0
    assert "checksum mismatch for table.parquet" in capsys.readouterr().out
    (aside,) = (tmp_path / ".quarantine" / "score").iterdir()
    assert aside.name.startswith(bad.id) and not bad.path.exists()
    assert store.verify() == []
    rebuilt = store.create("score", 1, {"a": 1}, [], build_table)
    assert rebuilt.id == bad.id and rebuilt.table()["x"].tolist() == [1, 2, 3]
    assert run_cli("quarantine", "score/0000000000000000", "--root", str(tmp_path)) == 2


def make_run(store: ArtifactStore) -> dict[str, object]:
    """A run's chain of artifacts, recorded as the flows record them, plus unreferenced ones."""
    rollout = store.create("rollout", 1, {"n": 1}, [], build_table)
    score = store.create("score", 1, {}, [rollout], build_table)
    value = store.create("value", 1, {}, [score], build_table)
    evaluation = store.create("eval", 1, {}, [value], build_table)
    store.record_run_step(
        "demo",
        "iteration-1",
        {"artifacts": {"value": str(value.path)}, "policy": {"value_models": [str(value.path)]}},
    )
    rows = [{"method": "iro-iter1", "artifact": f"eval/{evaluation.id}"}]
    store.record_run_step("demo", "evaluation", {"evaluation": rows})
    old_score = store.create("score", 2, {}, [rollout], build_table)
    orphan = store.create("rollout", 1, {"n": 2}, [], build_table)
    orphan_child = store.create("score", 1, {}, [orphan], build_table)
    return {
        "kept": [rollout, score, value, evaluation],
        "removed": [old_score, orphan, orphan_child],
    }


def test_gc_removes_only_what_no_run_references(tmp_path, capsys):
    store = ArtifactStore(tmp_path)
    run = make_run(store)
    removed = sorted(a.path for a in run["removed"])
    assert run_cli("gc", "--dry-run", "--root", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert [line.split(" ", 2)[2] for line in out.splitlines()[:-1]] == [str(p) for p in removed]
    assert "would remove 3 unreferenced artifacts" in out and "kept 4 artifacts" in out
    assert all(a.path.exists() for a in run["removed"])  # a dry run removes nothing
    assert run_cli("gc", "--root", str(tmp_path)) == 0
    assert not any(a.path.exists() for a in run["removed"])
    assert [c.ref for c in store.verify()] == sorted(f"{a.stage}/{a.id}" for a in run["kept"])
    assert all(c.problem is None for c in store.verify())
    assert not list(tmp_path.glob("*/.*"))  # nothing half-removed left behind


def test_gc_min_age_is_refused_on_a_local_root(tmp_path, capsys):
    assert run_cli("gc", "--min-age", "1", "--root", str(tmp_path)) == 2
    assert "--min-age applies to a URL root only" in capsys.readouterr().err


def test_gc_refuses_while_a_run_is_in_progress_or_a_record_is_unreadable(tmp_path):
    store = ArtifactStore(tmp_path)
    run = make_run(store)
    with store.run_lock("demo"), pytest.raises(ArtifactError, match="a run in progress"):
        store.gc()
    (store.run_dir("demo") / "iteration-2.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"run record .*iteration-2.json is unreadable"):
        store.gc()
    assert all(a.path.exists() for a in run["removed"])


def test_gc_refuses_when_a_referenced_manifest_is_unreadable(tmp_path):
    store = ArtifactStore(tmp_path)
    run = make_run(store)
    value = run["kept"][2]
    truncate(value.path / "manifest.json")
    with pytest.raises(ArtifactError, match=f"{value.path}/manifest.json is unreadable"):
        store.gc()
    assert all(a.path.exists() for a in run["kept"] + run["removed"])


# -- work directories (`<root>/.work/<stage>/<id>/`) and report records --

DAY = 24 * 3600


def age(path: Path, seconds: float) -> None:
    """Make `path` and everything in it look untouched for `seconds`."""
    then = time.time() - seconds
    for p in [*path.rglob("*"), path]:
        os.utime(p, (then, then))


def make_work(store: ArtifactStore, stage: str, artifact_id: str) -> Path:
    """A work directory holding a checkpoint, as the value trainer leaves one."""
    path = store.root / WORK / stage / artifact_id
    (path / "checkpoint-1").mkdir(parents=True)
    (path / "checkpoint-1" / "trainer_state.json").write_text("{}")
    return path


def test_gc_removes_published_and_abandoned_work_dirs_never_a_fresh_or_held_one(
    tmp_path, capsys, caplog
):
    store, work = ArtifactStore(tmp_path / "store"), tmp_path / "work"
    work.mkdir()
    published = store.create("value", 1, {"a": 1}, [], build_table)
    held_published = store.create("value", 1, {"a": 2}, [], build_table)
    refs = [f"value/{a.id}" for a in (published, held_published)]
    store.record_run_step("demo", "iteration-1", {"artifacts": refs})
    leftover = make_work(store, "value", published.id)  # fresh, but its artifact is published
    abandoned = make_work(store, "value", "00000000000000aa")  # a day old, lock of a dead holder
    me = ProcessId.current()
    dead = {"pid": me.pid, "start": me.start + 1, "host": me.host, "since": "2000-01-01T00:00:00Z"}
    (abandoned / ".lock").touch()
    (abandoned / ".lock.owner").write_text(json.dumps(dead))
    age(abandoned, 2 * DAY)
    fresh = make_work(store, "value", "00000000000000bb")  # unpublished, touched just now
    held = make_work(store, "value", held_published.id)
    child = start(child_hold_work_lock, str(held), str(work / "held"))
    try:
        wait_for((work / "held").exists, "the child to hold the work lock")
        age(held, 2 * DAY)  # published and old: only its live holder keeps it
        assert run_cli("gc", "--dry-run", "--root", str(store.root)) == 0
        out = capsys.readouterr().out
        assert sorted(out.splitlines()[:-1]) == sorted(
            f"would remove {p}" for p in (leftover, abandoned)
        )
        assert "would remove 0 unreferenced artifacts" in out
        assert "and 2 stale work directories" in out and "kept 2 artifacts" in out
        assert all(p.is_dir() for p in (leftover, abandoned, fresh, held))  # dry: untouched
        report = store.gc()  # the dry run did not make the abandoned one look fresh
        assert sorted(report.work) == sorted([leftover, abandoned]) and report.bytes > 0
        assert not leftover.exists() and not abandoned.exists()
        assert fresh.is_dir() and (held / "checkpoint-1" / "trainer_state.json").is_file()
    finally:
        kill(child)
    caplog.set_level(logging.INFO)
    assert store.gc().work == [held] and not held.exists()  # its holder is gone now
    assert f".lock was left by process {child.pid}" in caplog.text
    assert fresh.is_dir() and published.path.is_dir() and held_published.path.is_dir()
    assert not list((store.root / WORK / "value").glob(".*"))  # nothing half-removed


def test_gc_removes_a_work_dir_half_removed_by_a_killed_gc(tmp_path):
    store = ArtifactStore(tmp_path)
    me = ProcessId.current()
    gone = ProcessId(me.pid, me.start + 1, me.host)
    half = make_work(store, "value", "00000000000000aa")
    half = half.rename(half.with_name(f".{half.name}.{gone.tag}.gc"))
    assert store.gc().staging == [half] and not half.exists()


def test_gc_keeps_a_report_that_a_run_records(tmp_path):
    store = ArtifactStore(tmp_path)
    evaluation = make_run(store)["kept"][3]
    recorded = store.create("report", 2, {"baseline": "reference"}, [evaluation], build_table)
    unrecorded = store.create("report", 2, {"baseline": "base"}, [evaluation], build_table)
    entry = {"stage": "report", "id": recorded.id, "artifact": f"report/{recorded.id}"}
    store.record_run_step("demo", "report", {"reports": [entry]})
    assert store.gc().artifacts[0] == unrecorded.path
    assert recorded.path.is_dir() and not unrecorded.path.exists()


def test_building_a_report_records_it_in_the_run_until_its_evaluation_is_replaced(tmp_path):
    from iro.core.config import ReportConfig
    from iro.reports.run import build_report
    from tests.report_helpers import make_run as make_evaluated_run

    store = make_evaluated_run(tmp_path)
    by_reference = build_report(store, "demo", ReportConfig(baseline="reference"))
    by_base = build_report(store, "demo", ReportConfig(baseline="base"))
    assert build_report(store, "demo", ReportConfig(baseline="reference")).id == by_reference.id
    record = json.loads((store.run_dir("demo") / "report.json").read_text())
    assert [e["artifact"] for e in record["reports"]] == [
        f"report/{by_base.id}",
        f"report/{by_reference.id}",
    ]
    assert store.gc().artifacts == [] and by_reference.path.is_dir() and by_base.path.is_dir()
    # a new evaluation of the run: its report replaces the old evaluation's in the record
    outputs = {"base": ["a"] * 4, "iro-iter2": ["b"] * 4}
    make_evaluated_run(tmp_path, outputs=outputs)
    newer = build_report(store, "demo", ReportConfig(baseline="reference"))
    record = json.loads((store.run_dir("demo") / "report.json").read_text())
    assert [e["artifact"] for e in record["reports"]] == [f"report/{newer.id}"]
    store.gc()
    assert newer.path.is_dir() and not by_reference.path.exists() and not by_base.path.exists()
