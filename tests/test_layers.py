"""The package's folders are its layers, and imports run one way through them.

`iro` is the only installed name; each of its subpackages is one folder of this repository (the
mapping is pyproject.toml's `package-dir`) and one layer. A module may import its own layer or
lower ones, never higher, and no two files may import each other, directly or around a circle.

Every import counts, including the ones deferred into function bodies: a lazy import of a higher
layer, or one that closes a circle, is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# subpackage -> layer, bottom to top; the longest matching prefix decides
LAYERS = {
    "iro.core": 0,  # config schema, artifact stores, models, datasets, generation engines
    "iro.reward": 1,  # rewards behind one interface
    "iro.valuefn": 2,  # value learning: reweighting, targets, models, training, guided search
    "iro.pipeline": 3,  # stages, artifact identity, where a stage executes, the cost plan
    "iro.reports": 4,  # win-rate reports and their statistics
    "iro.tasks": 5,  # one Prefect task per stage
    "iro.flows": 6,  # Prefect flows and their deployments
    "iro.app": 7,  # the `iro` command and its servers
}


def package_folders() -> dict[str, Path]:
    """Every installed package and the folder it is read from, as the packaging declares them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})

    def folder(package: str) -> Path:
        if package in mapped:
            return ROOT / mapped[package]
        parent, _, leaf = package.rpartition(".")
        return folder(parent) / leaf if parent else ROOT / package

    return {package: folder(package) for package in setuptools["packages"]}


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every module of every declared package."""
    modules = {}
    for package, folder in package_folders().items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


MODULES = project_modules()


def layer_of(module: str) -> int | None:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def imported_modules(path: Path) -> set[str]:
    """Every absolute import in the file, as `module` and `module.name` (a name may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def file_dependencies(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules its file imports (`from a import b` reads a.b if it is a
    module, else a)."""
    graph = {}
    for name, path in modules.items():
        imported = imported_modules(path)
        targets = {n for n in imported if n in modules}
        # `from a import b` with b a module depends on a.b, not on the package a
        targets -= {n for n in targets if any(m.startswith(n + ".") for m in targets)}
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_only_iro_is_installed():
    assert {p.split(".")[0] for p in package_folders()} == {"iro"}


NOT_INSTALLED = {"tests"}  # folders of the repository that hold Python packages but no product


def test_every_folder_with_modules_is_a_declared_package():
    """A folder of modules that the packaging does not list would be missing from a wheel."""
    declared = {folder.resolve() for folder in package_folders().values()}
    tracked = subprocess.run(
        ["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    on_disk = {
        (ROOT / init).parent.resolve()
        for init in tracked
        if Path(init).parts[0] not in NOT_INSTALLED
    }
    assert on_disk <= declared, f"packages missing from pyproject.toml: {on_disk - declared}"


def test_every_project_module_has_a_layer():
    unplaced = [m for m in MODULES if m != "iro" and layer_of(m) is None]
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward(module):
    own = layer_of(module)
    if own is None:
        return  # the bare `iro` package marker
    upward = sorted(
        name
        for name in imported_modules(MODULES[module])
        if (layer := layer_of(name)) is not None and layer > own
    )
    assert not upward, f"{module} (layer {own}) imports higher layers: {upward}"


def test_no_two_files_import_each_other():
    found = cycles(file_dependencies(MODULES))
    assert not found, f"import cycles between files: {found}"


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """The checks themselves can fail: a core module importing the pipeline, and a circle of
    three files."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from iro.pipeline.runner import Pipeline\n")
    assert layer_of("iro.core.store.local") == 0
    assert {layer_of(n) for n in imported_modules(bad)} - {None} == {3}

    files = {}
    for name, body in {
        "a": "from iro.x.b import f\n",
        "b": "def f():\n    from iro.x import c\n",
        "c": "import iro.x.a\n",
        "d": "from iro.x.a import g\n",
    }.items():
        files[f"iro.x.{name}"] = tmp_path / f"{name}.py"
        files[f"iro.x.{name}"].write_text(body)
    assert cycles(file_dependencies(files)) == [["iro.x.a", "iro.x.b", "iro.x.c"]]
