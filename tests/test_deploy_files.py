"""prefect.yaml and the GPU pool's job template: what `prefect deploy` and a worker would read."""

import importlib
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


def deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def test_every_entrypoint_names_a_flow_of_the_project():
    for deployment in deployments():
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert hasattr(getattr(module, name), "deploy"), deployment["entrypoint"]


def test_every_deployment_config_exists():
    for deployment in deployments():
        assert (
            ROOT / deployment.get("parameters", {}).get("config", "configs/demo.yaml")
        ).is_file()


def test_the_gpu_template_defines_every_variable_its_job_reads():
    template = json.loads((ROOT / "deploy" / "k8s-gpu-job-template.json").read_text())
    used = set(PLACEHOLDER.findall(json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"])
    gpu_variables = next(d for d in deployments() if d["name"] == "gpu")["work_pool"]
    assert set(gpu_variables["job_variables"]) <= set(template["variables"]["properties"])
