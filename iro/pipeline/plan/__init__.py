"""What a run would need on a GPU, worked out from its config without downloading anything.

A paper-scale run costs GPU hours before its first result; a plan says beforehand which models
it loads, how much GPU memory each stage wants, how many tokens each iteration generates, scores
and trains on, and about how long that takes on a named GPU. Model shapes come from a local
config.json (a checkpoint directory, the converted embedded model, or the hub cache), else from
`shapes.KNOWN_MODELS`, else the model is reported as of unknown size. The cost model and its
constants are documented in docs/scaling.md; `iro check --plan` prints a plan
(iro.app.plan_text).
"""

from iro.pipeline.plan.build import Plan, build_plan
from iro.pipeline.plan.gpus import GPUS, Gpu
from iro.pipeline.plan.hours import work_hours
from iro.pipeline.plan.memory import Stage, generation_stage, scoring_stage, training_stage
from iro.pipeline.plan.models import Model, run_models
from iro.pipeline.plan.shapes import KNOWN_MODELS, NOT_FOUND, Shape, find_shape
from iro.pipeline.plan.workload import Work, prompt_tokens, run_work, search_work

__all__ = [
    "GPUS",
    "KNOWN_MODELS",
    "NOT_FOUND",
    "Gpu",
    "Model",
    "Plan",
    "Shape",
    "Stage",
    "Work",
    "build_plan",
    "find_shape",
    "generation_stage",
    "prompt_tokens",
    "run_models",
    "run_work",
    "scoring_stage",
    "search_work",
    "training_stage",
    "work_hours",
]
