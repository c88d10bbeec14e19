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


def test_every_entrypoint_names_a_flow_of_the_installed_package():
    """Module paths (not file paths): a worker imports the flow from the installed `iro`."""
    for deployment in deployments():
        module, _, name = deployment["entrypoint"].rpartition(".")
        assert module.startswith("iro.flows."), deployment["entrypoint"]
        assert hasattr(getattr(importlib.import_module(module), name), "deploy")


def test_prefect_yaml_describes_the_deployments_iro_serve_registers():
    """The same flows, deployment names, parameters and schedule in both places."""
    from iro.flows.deployments import build_deployments

    served = {
        (
            d.entrypoint,
            d.name,
            tuple(sorted(d.parameters)),
            tuple(s.schedule.cron for s in d.schedules),
        )
        for d in build_deployments("configs/demo.yaml", report_cron="0 6 * * *")
    }
    described = {
        (
            d["entrypoint"],
            d["name"],
            tuple(sorted(d.get("parameters", {"run": None, "config": None}))),
            tuple(s["cron"] for s in d.get("schedules", [])),
        )
        for d in deployments()
        if d["name"] != "gpu"
    }
    assert described == served


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
