"""What a user gets from a wheel: one top-level name, `iro`, whose subpackages are the
repository's top-level folders, importable from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_layers import ROOT, package_folders

# one module of every layer, imported from the installed wheel
PROBES = (
    "iro.core.config",
    "iro.reward.length",
    "iro.valuefn.td",
    "iro.pipeline.execution",
    "iro.reports.run",
    "iro.tasks.stages",
    "iro.flows.iteration",
    "iro.app.cli",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (so no build files land in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in {f.relative_to(ROOT).parts[0] for f in package_folders().values()}:
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)],
        check=True,
    )  # fmt: skip
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_installs_only_iro_at_the_top_level(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"iro"}
    for package in package_folders():
        assert package.replace(".", "/") + "/__init__.py" in names, package


def test_the_installed_wheel_imports_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import importlib, sys\nfor m in sys.argv[1:]: print(importlib.import_module(m).__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    printed = subprocess.run(
        [sys.executable, "-c", script, *PROBES],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(printed) == len(PROBES)
    assert all(Path(p).is_relative_to(target / "iro") for p in printed), printed


def test_the_wheel_carries_the_license_and_iro_reports_its_version(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        fields = archive.read(metadata).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in fields
    version = next(
        line.split(": ", 1)[1] for line in fields.splitlines() if line.startswith("Version: ")
    )
    shown = subprocess.run(
        [sys.executable, "-m", "iro.app.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == f"iro {version}"
