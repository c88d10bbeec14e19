"""How artifacts are named from outside their own directory, the same way by both stores: a
`STAGE/ID` reference on the command line, the name of a copy set aside, and the references in run
records and manifests that decide what gc keeps.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any

from iro.core.store.artifact import ENTRY_NAME, RUNS, ArtifactError


def artifact_ref(ref: str) -> tuple[str, str]:
    """(stage, id) of `STAGE/ID`, or of a path ending in them, as `iro store quarantine` takes
    it; anything else raises, so a typo never sets aside something that is not an artifact."""
    parts = PurePath(ref).parts[-2:]
    if len(parts) != 2 or not all(ENTRY_NAME.match(p) for p in parts) or parts[0] == RUNS:
        raise ArtifactError(f"{ref!r} does not name an artifact; give it as STAGE/ID")
    return parts[0], parts[1]


def quarantine_name(artifact_id: str) -> str:
    """`<id>.<UTC time>`: a copy set aside now, beside any set aside earlier."""
    return f"{artifact_id}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def referenced_closure(
    records: Sequence[Any],
    existing: set[tuple[str, str]],
    parents_of: Callable[[tuple[str, str]], set[tuple[str, str]]],
) -> set[tuple[str, str]]:
    """The artifacts of `existing` that the run records name, and their parents, transitively:
    what gc keeps, on local disk or at a URL."""
    todo = set().union(*map(_named_in, records)) & existing
    seen: set[tuple[str, str]] = set()
    while todo:
        key = todo.pop()
        seen.add(key)
        todo |= parents_of(key) & existing - seen
    return seen


def manifest_parents(manifest: dict[str, Any]) -> set[tuple[str, str]]:
    """(stage, id) of the parents a manifest names (KeyError or TypeError when it names none)."""
    return {(p["stage"], p["id"]) for p in manifest["parents"]}


def _named_in(data: Any) -> set[tuple[str, str]]:
    """Every (stage, id) pair a run record could name: `{"stage", "id"}`, or two consecutive
    components of a path-like string (`eval/<id>`, `<root>/value/<id>/value_model`). Callers
    keep only the pairs that are artifacts."""
    if isinstance(data, dict):
        found = set().union(*map(_named_in, data.values()))
        if isinstance(data.get("stage"), str) and isinstance(data.get("id"), str):
            found.add((data["stage"], data["id"]))
        return found
    if isinstance(data, list):
        return set().union(*map(_named_in, data))
    if isinstance(data, str) and "/" in data and "\n" not in data:
        parts = PurePath(data).parts
        return set(itertools.pairwise(parts))
    return set()
