"""The checks of an artifact against its manifest, shared by both stores.

A local artifact is checked where it lies (`ArtifactStore.load`, `verify`), a published one
before and while it is downloaded (`RemoteArtifactStore`); both judge the manifest by one rule and
then hash each file it lists, stopping at the first that does not match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from iro.core.store.artifact import MANIFEST

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def unreadable(err: BaseException) -> str:
    """The problem of a manifest that cannot be read or lacks what every manifest has."""
    return f"{MANIFEST} is unreadable or incomplete ({type(err).__name__}: {err})"


def safe_file_name(name: Any) -> bool:
    """A manifest entry that stays inside the artifact directory when written."""
    if not isinstance(name, str) or not name or name == MANIFEST:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and all(part not in ("", ".", "..") for part in path.parts)


def manifest_problem(
    data: str | bytes, stage: str, artifact_id: str, *, published: bool = False
) -> tuple[dict[str, Any], str | None]:
    """The manifest in `data` and the first thing that makes it unfit to describe stage/id.

    A local manifest sits in the directory it describes, whose files the caller compares with it
    next. A `published` one comes from a URL and its entries become paths this machine writes,
    so each must also be a safe relative name with a sha256 digest.
    """
    try:
        manifest = json.loads(data)
        files, named = manifest["files"], (manifest["stage"], manifest["id"])
        if not (published or isinstance(files, dict)):
            raise TypeError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError) as err:
        return {}, unreadable(err)
    if named != (stage, artifact_id):
        here = "" if published else ", not this directory"
        return manifest, f"{MANIFEST} describes {named[0]}/{named[1]}{here}"
    if not isinstance(files, dict):
        return manifest, f"{MANIFEST}: its 'files' is not a mapping"
    if published:
        bad = [n for n, d in files.items() if not (safe_file_name(n) and SHA256.match(str(d)))]
        if bad:
            return manifest, f"{MANIFEST} lists an unsafe file entry {bad[0]!r}"
    return manifest, None


def first_file_problem(
    files: dict[str, str], file_problem: Callable[[str, str], str | None]
) -> str | None:
    """The first problem `file_problem(name, digest)` finds among the listed files, in name
    order (so a report names the same file every time), or None when every file matches."""
    for name, digest in sorted(files.items()):
        problem = file_problem(name, digest)
        if problem is not None:
            return problem
    return None
