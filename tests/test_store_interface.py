"""Both artifact stores satisfy the one `Store` interface the pipeline is written against.

`isinstance` on a runtime-checkable Protocol only sees that the names exist, so each method is
also compared by signature: every call the Protocol allows must bind on the implementation.
Return types are left to a type checker.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from iro.core.store.local import ArtifactStore
from iro.core.store.protocol import Store
from iro.core.store.remote import RemoteArtifactStore

MEMBERS = sorted(name for name in vars(Store) if not name.startswith("_"))


def stores(tmp_path: Path) -> dict[str, Any]:
    """One of each store; a memory:// URL needs no server and makes no request here."""
    return {
        "local": ArtifactStore(tmp_path / "local"),
        "remote": RemoteArtifactStore("memory://iro-interface", tmp_path / "cache"),
    }


def mismatches(store: object) -> list[str]:
    """Each way `store` falls short of the Protocol: a missing member, or a method on which a
    call the Protocol allows would not bind (a parameter missing, of another kind, without the
    default the Protocol gives it, out of order; or an extra one without a default)."""
    found = []
    for name in MEMBERS:
        wanted = vars(Store)[name]
        if not hasattr(store, name):
            found.append(f"{name}: missing")
        elif isinstance(wanted, property):
            if callable(getattr(store, name)):
                found.append(f"{name}: a method, not an attribute")
        else:
            found += [
                f"{name}: {why}" for why in signature_mismatches(wanted, getattr(store, name))
            ]
    return found


def signature_mismatches(wanted: Any, method: Any) -> list[str]:
    """How the bound `method` differs from the Protocol's `wanted` (self dropped)."""
    if not callable(method):
        return ["not a method"]
    expected = list(inspect.signature(wanted).parameters.values())[1:]
    given = inspect.signature(method).parameters
    found = []
    for p in expected:
        q = given.get(p.name)
        if q is None:
            found.append(f"no parameter {p.name!r}")
        elif q.kind != p.kind:
            found.append(f"{p.name!r} is {q.kind.description}, not {p.kind.description}")
        elif p.default is not p.empty and q.default is q.empty:
            found.append(f"{p.name!r} has no default")
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    order = [p.name for p in expected if p.kind in positional]
    if [n for n, q in given.items() if q.kind in positional][: len(order)] != order:
        found.append(f"positional parameters are not {order}")
    names = {p.name for p in expected}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    for n, q in given.items():
        if n not in names and q.kind not in variadic and q.default is q.empty:
            found.append(f"extra parameter {n!r} has no default")
    return found


def test_the_protocol_names_the_operations_the_pipeline_uses():
    assert MEMBERS == [
        "artifact_id",
        "create",
        "find",
        "gc",
        "load",
        "quarantine",
        "record_run_step",
        "root",
        "run_dir",
        "run_lock",
        "verify",
    ]


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_each_store_satisfies_the_protocol(tmp_path, kind):
    store = stores(tmp_path)[kind]
    assert isinstance(store, Store)
    assert isinstance(store.root, Path)
    assert mismatches(store) == []


def test_the_check_sees_a_missing_method_and_an_incompatible_one(tmp_path):
    class Broken(ArtifactStore):
        gc = None  # type: ignore[assignment]

        def find(self, artifact_id: str) -> None:  # type: ignore[override]
            return None

        def run_dir(self, run_name: str, create: bool) -> Path:  # type: ignore[override]
            return self.root

    found = mismatches(Broken(tmp_path))
    assert "gc: not a method" in found
    assert "find: no parameter 'stage'" in found
    assert "run_dir: extra parameter 'create' has no default" in found
