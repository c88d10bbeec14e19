"""A throwaway PostgreSQL server on loopback for the Prefect server tests (Debian's `postgresql`).

`make test` installs the package (`make db-deps`); the cluster lives in a temporary directory,
trusts local connections, skips fsync, and is removed when the block ends. PostgreSQL refuses
to run as root, so as root its programs run as the `postgres` user the package creates.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

DATABASE = "prefect"


@dataclass(frozen=True)
class PostgresDatabase:
    port: int
    bin_dir: Path
    as_user: tuple[str, ...]

    @property
    def url(self) -> str:
        """What Prefect's PREFECT_SERVER_DATABASE_CONNECTION_URL takes."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def query(self, sql: str) -> list[str]:
        """Rows of one SQL query through psql, one string per row."""
        result = subprocess.run(
            [*self.as_user, str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", DATABASE, "-tAc", sql],
            capture_output=True, text=True, timeout=60, check=True, cwd="/",
        )  # fmt: skip
        return result.stdout.split()


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's programs, or a failure that says how to install it."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parts[-3])
    if not found:
        pytest.fail("PostgreSQL is not installed: run `make db-deps` (apt-get install postgresql)")
    return found[-1].parent


@contextmanager
def postgres_database(port: int) -> Iterator[PostgresDatabase]:
    """A fresh cluster with an empty `prefect` database, listening on 127.0.0.1:`port`."""
    bin_dir = postgres_bin_dir()
    as_user = ("runuser", "-u", "postgres", "--") if os.geteuid() == 0 else ()
    # not under pytest's tmp_path: its parents are private to root, and postgres must reach it
    root = Path(tempfile.mkdtemp(prefix="iro-postgres-"))
    data, log = root / "data", root / "postgres.log"
    if as_user:
        shutil.chown(root, "postgres", "postgres")

    def run(*args: str) -> None:
        done = subprocess.run(
            [*as_user, *args], cwd=root, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            pytest.fail(f"{Path(args[0]).name} failed ({done.returncode}):\n{done.stderr[-3000:]}")

    server = None
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync")  # fmt: skip
        with log.open("w") as out:  # the server keeps its own copy of the descriptor
            server = subprocess.Popen(
                [*as_user, str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                 "-p", str(port), "-k", str(root), "-F"],
                cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        ready = [*as_user, str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        deadline = time.monotonic() + 60
        while subprocess.run(ready, cwd=root, capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            DATABASE)  # fmt: skip
        yield PostgresDatabase(port, bin_dir, as_user)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        shutil.rmtree(root, ignore_errors=True)
