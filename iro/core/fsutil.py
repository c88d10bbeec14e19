"""Small filesystem helpers: atomic writes, process identities and an inter-process lock."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary readable file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- which process owns a lock or a staging directory, and whether it still runs --

_TAG = re.compile(r"^(?P<pid>\d+)-(?P<start>\d+)@(?P<host>[A-Za-z0-9-]*)$")


def _host() -> str:
    """This machine's name, safe in a file name, plus its pid namespace where Linux has one.

    Two containers sharing a store and a host name (`--network host`) see different pids: a
    pid is checked only where its namespace is ours.
    """
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    try:
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    except OSError:
        return name
    return f"{name}-{namespace}"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> int:
    """When `pid` started, in clock ticks since boot; 0 where /proc cannot tell.

    With the pid it names one process for good: a pid reused by a later process (a container's
    pid 1 after a restart, say) has another start time.
    """
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else 0


@dataclass(frozen=True)
class ProcessId:
    """A process on a host, written into file names and lock records as `pid-start@host`."""

    pid: int
    start: int
    host: str

    @classmethod
    def current(cls) -> ProcessId:
        return cls(os.getpid(), _start_ticks(os.getpid()), _host())

    @classmethod
    def parse(cls, tag: str) -> ProcessId | None:
        match = _TAG.match(tag)
        if match is None:
            return None
        return cls(int(match["pid"]), int(match["start"]), match["host"])

    @property
    def tag(self) -> str:
        return f"{self.pid}-{self.start}@{self.host}"

    def running(self) -> bool | None:
        """Whether this process still runs; None when it ran on another host (cannot tell)."""
        if self.host != _host():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another account
        fields = _proc_stat(self.pid)
        if not fields:  # no /proc: the pid exists, so count it as running
            return True
        if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        return not self.start or _start_ticks(self.pid) in (0, self.start)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host or 'an unnamed host'}"


# -- an inter-process lock that says who holds it --


class LockBusyError(RuntimeError):
    """A lock held by another process, where the caller chose not to wait."""


def _owner_file(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


def lock_holder(lock_path: Path) -> str:
    """Who holds (or last held) the lock, for a log line; 'another process' when unrecorded."""
    try:
        record = json.loads(_owner_file(lock_path).read_text())
        owner = ProcessId(int(record["pid"]), int(record["start"]), str(record["host"]))
        return f"{owner.describe()} (since {record['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def directory_lock(
    lock_path: Path, on_wait: Callable[[str], None] | None = None, wait: bool = True
) -> Iterator[None]:
    """An exclusive inter-process lock (`filelock`, an flock) held while the block runs.

    The kernel drops the flock of a process that dies, even by kill -9, so a dead holder never
    blocks anyone; the holder's `.owner` record beside the lock file says who it was. A record
    still there when the lock is taken means its writer died holding the lock: that is logged as
    a takeover. `on_wait(holder)` is called once if a live holder makes this one wait; with
    `wait=False` a busy lock raises LockBusyError naming its holder instead.
    """
    lock_path = Path(lock_path)
    lock = FileLock(lock_path)  # creates the lock file's directory
    try:
        lock.acquire(blocking=False)
    except Timeout:
        holder = lock_holder(lock_path)
        if not wait:
            raise LockBusyError(f"{lock_path} is held by {holder}") from None
        if on_wait is not None:
            on_wait(holder)
        lock.acquire()
    owner_file = _owner_file(lock_path)
    try:
        if owner_file.exists():
            log.warning(
                "lock %s was left by %s, which ended without releasing it; taking it over",
                lock_path,
                lock_holder(lock_path),
            )
        me = ProcessId.current()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(owner_file, {**me.__dict__, "since": since})
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()
