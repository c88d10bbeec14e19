"""Value Augmented Sampling as a run: the IRO pipeline with VAS's choices (docs/method.md).

VAS learns one value function from samples of the frozen model, with TD(lambda) targets and a
target network, and decodes token by token, shifting the policy's top-k logits by beta * V. Here
that is one iteration of the same stages (rollout from pi_base, reward, reweight, value training)
with those settings, evaluated with the `vas` method: the same artifacts, run records, evaluation
table and reports as an IRO run, under the run name `<config run_name>-vas` by default.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from iro.flows.params import (
    DEFAULT_CONFIG,
    ConfigPath,
    Overrides,
    RunName,
    flow_run_namer,
    show_library_logs,
)
from iro.flows.pipeline import run_pipeline
from iro.pipeline.methods import method_run_config
from iro.pipeline.preflight import check_run


@flow(name="vas", flow_run_name=flow_run_namer("vas"))
def vas_pipeline(
    config: ConfigPath = DEFAULT_CONFIG,
    run_name: RunName = None,
    overrides: Overrides = None,
) -> dict[str, Any]:
    """Train a VAS value model on samples of the frozen policy and evaluate VAS decoding next to
    the baselines.

    Args:
        config: YAML run config; a relative path is read from the serving process's directory.
        run_name: names the run; empty: the config's run_name followed by -vas.
        overrides: dotted config keys to override on top of VAS's settings, e.g.
            {"value.td.trace_decay": 0.9, "decode.guidance_beta": 2.0}.
    """
    show_library_logs()
    cfg = method_run_config(config, run_name, overrides, "vas")
    check_run(
        cfg, cfg.iterations, cfg.eval.enabled
    )  # before any stage: models, prompts, trainer settings
    return run_pipeline(cfg)
