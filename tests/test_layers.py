"""Imports run one way: configs and the base, then reward/valuefn, the integration layer, tasks,
flows, and the CLI/server on top. A module may import its own layer or lower ones, never higher.

Every import counts, including the ones deferred into function bodies: a lazy import of a higher
layer is still a dependency on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# module prefix -> layer (lower numbers sit lower); the longest matching prefix decides
LAYERS = {
    "iro.base": 0,
    "reward": 1,
    "valuefn": 1,
    "iro.pipeline": 2,
    "iro.reports": 2,
    "tasks": 3,
    "flows": 4,
    "iro.app": 5,
}
PACKAGES = ("iro", "reward", "valuefn", "tasks", "flows")


def layer_of(module: str) -> int | None:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_project_module_has_a_layer():
    unplaced = [
        module_name(p)
        for p in project_modules()
        if module_name(p) != "iro" and layer_of(module_name(p)) is None
    ]
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: module_name(p))
def test_imports_run_downward(path):
    own = layer_of(module_name(path))
    if own is None:
        return  # the bare `iro` package marker
    upward = sorted(
        name
        for name in imported_modules(path)
        if (layer := layer_of(name)) is not None and layer > own
    )
    assert not upward, f"{module_name(path)} (layer {own}) imports higher layers: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: a base module importing the pipeline is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from iro.pipeline.runner import Pipeline\n")
    assert layer_of("iro.base.store") == 0
    assert {layer_of(n) for n in imported_modules(bad)} - {None} == {2}
