"""The process tests/test_kill_points.py kills: one `ArtifactStore.create` of a three-file
artifact, optionally stopped at a kill point until SIGKILL arrives.

    python -m tests.kill_points_child ROOT [--hold POINT --ready FILE [--offset N]]

The points (POINTS) need no hook in production code. Two are in this module's own build, which
writes FIRST, then BIG in CHUNK-sized writes, then LAST: `between-files` stops once FIRST is
written and closed, `mid-file` once the first N bytes of BIG are written and flushed. The third,
`before-rename`, wraps `os.rename` and `os.replace` in this process only, so that moving the
staging directory to the artifact's final path stops just before it happens, after checking that
the staging directory holds its manifest. On reaching its point the process names its staging
directory in FILE (atomically: the test reads it at once) and waits to be killed. Without
`--hold` it creates the artifact and prints its id; the log goes to stderr.

Only the store is imported, so that the process starts in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from iro.core.store.local import ArtifactStore

STAGE, VERSION, CONFIG = "score", 1, {"kill_points": 1}
FIRST, BIG, LAST = "first.txt", "big.bin", "last.json"
BIG_SIZE = 3 * 2**20 + 12_345  # not a multiple of CHUNK: the last write is a short one
CHUNK = 2**16
MANIFEST = "manifest.json"

BETWEEN_FILES, BEFORE_RENAME, MID_FILE = "between-files", "before-rename", "mid-file"
POINTS = [BETWEEN_FILES, BEFORE_RENAME, MID_FILE]


@cache
def artifact_files() -> dict[str, bytes]:
    """The artifact's files, in the order the build writes them; the same in every process."""
    big = random.Random(0).randbytes(BIG_SIZE)
    return {FIRST: b"written whole before the next file\n", BIG: big, LAST: b'{"done": true}\n'}


def wait_to_be_killed(ready: Path, staging: Path) -> None:
    """Name the staging directory in `ready` (written whole or not at all), then wait."""
    partial = ready.with_name(ready.name + ".partial")
    partial.write_text(str(staging))
    os.replace(partial, ready)
    while True:
        time.sleep(60)


@dataclass(frozen=True)
class Hold:
    """Where the build stops: `point` (one of POINTS), `offset` bytes into BIG for MID_FILE."""

    point: str
    ready: Path
    offset: int = 0

    def inside(self, name: str, start: int, length: int) -> bool:
        """Whether the write of `length` bytes at `start` of file `name` holds the offset."""
        return self.point == MID_FILE and name == BIG and start <= self.offset < start + length

    def after(self, name: str) -> bool:
        return self.point == BETWEEN_FILES and name == FIRST


def write_artifact(out: Path, hold: Hold | None = None) -> dict[str, int]:
    """The build: each file of `artifact_files` in turn, in CHUNK-sized writes."""
    for name, data in artifact_files().items():
        with (out / name).open("wb") as f:
            for start in range(0, len(data), CHUNK):
                chunk = data[start : start + CHUNK]
                if hold is not None and hold.inside(name, start, len(chunk)):
                    f.write(chunk[: hold.offset - start])
                    f.flush()
                    wait_to_be_killed(hold.ready, out)
                f.write(chunk)
        if hold is not None and hold.after(name):
            wait_to_be_killed(hold.ready, out)
    return {"bytes": sum(map(len, artifact_files().values()))}


def hold_before_rename(target: Path, ready: Path) -> None:
    """Stop right before a directory is renamed to `target`, once sure it has its manifest."""

    def held(rename: Callable[..., None]) -> Callable[..., None]:
        def held_rename(src: str | Path, dst: str | Path, **kwargs: object) -> None:
            if Path(dst) == target:
                if not (Path(src) / MANIFEST).is_file():
                    raise AssertionError(f"{src} is renamed to {dst} without its {MANIFEST}")
                wait_to_be_killed(ready, Path(src))
            rename(src, dst, **kwargs)

        return held_rename

    os.rename, os.replace = held(os.rename), held(os.replace)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--hold", choices=POINTS)
    parser.add_argument("--ready", type=Path, help="written when the point is reached")
    parser.add_argument("--offset", type=int, default=0, help="bytes of BIG before a mid-file hold")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    store = ArtifactStore(args.root.absolute())
    hold = None if args.hold is None else Hold(args.hold, args.ready, args.offset)
    if args.hold == BEFORE_RENAME:
        target = store.path_of(STAGE, store.artifact_id(STAGE, VERSION, CONFIG, []))
        hold_before_rename(target, args.ready)
    artifact = store.create(STAGE, VERSION, CONFIG, [], lambda out: write_artifact(out, hold))
    print(f"created {artifact.stage}/{artifact.id}", flush=True)


if __name__ == "__main__":
    main()
