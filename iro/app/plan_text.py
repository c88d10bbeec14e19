"""The text `iro check CONFIG --plan` prints: a plan's models, memory, tokens and hours as
tables."""

from __future__ import annotations

from iro.pipeline.plan import Gpu, Plan, Stage

GIB = 2**30


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return str(n)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f}"


def _hours(h: float | None) -> str:
    return "?" if h is None else f"{h:.2f}"


def _format_models(plan: Plan) -> list[str]:
    lines = ["Models (nothing downloaded):"]
    for m in plan.models:
        size = (
            f"unknown size ({m.source})"
            if m.params is None
            else f"{_count(m.params)} params, {_gib(m.weight_bytes)} GiB {m.dtype}; from {m.source}"
        )
        if m.matmul_dtype != m.dtype:
            size += f"; runs in {m.matmul_dtype} (autocast)"
        lines += [f"  {m.role:<16} {m.reference}", f"  {'':<16} {size}"]
    return lines


def _verdict(total: int | None, gpu: Gpu) -> str:
    if total is None:
        return "  (unknown sizes left out)"
    return "  fits" if total <= gpu.memory_gib * GIB else f"  EXCEEDS one {gpu.name}"


def _format_stage(stage: Stage, gpu: Gpu, width: int) -> list[str]:
    lines = [f"  {stage.name}:"]
    if not stage.parts:
        return [*lines, "    no model on the GPU"]
    lines += [f"    {name:<{width}} {_gib(size):>7} GiB" for name, size in stage.parts]
    known = sum(size for _, size in stage.parts if size is not None)
    lines.append(f"    {'total':<{width}} {_gib(known):>7} GiB{_verdict(stage.total, gpu)}")
    return lines


def _format_memory(plan: Plan) -> list[str]:
    gpu, policy = plan.gpu, plan.cfg.policy
    width = max(len(name) for stage in plan.stages for name, _ in stage.parts)
    lines = [f"GPU memory per stage ({gpu.name}: {gpu.memory_gib:g} GiB):"]
    for stage in plan.stages:
        lines += _format_stage(stage, gpu, width)
    if policy.engine != "openai":
        pool = policy.gpu_memory_utilization * gpu.memory_gib
        lines.append(
            f"  vLLM reserves policy.gpu_memory_utilization x {gpu.memory_gib:g} = {pool:.1f} GiB "
            "for policy weights + KV cache; a smaller pool than the batch wants queues "
            "sequences (slower, not an error)"
        )
    return lines


def _format_work(plan: Plan) -> list[str]:
    header = f"  {'pass':<18} {'prompts':>7} {'U':>3} {'V':>2} {'generated':>10} {'prefill':>9} {'value tok':>10} {'reward tok':>10} {'trained':>9}"
    lines = [
        f"Tokens (prompts counted at their upper bound of {plan.prompt_tokens} tokens; U: "
        "candidates per prompt, V: value models guiding):",
        header,
    ]
    for w in plan.work:
        lines.append(
            f"  {w.label:<18} {w.prompts:>7} {w.samples:>3} {w.value_models:>2} {_count(w.generated):>10} "
            f"{_count(w.prefill):>9} {_count(w.value_tokens):>10} {_count(w.reward_tokens):>10} "
            f"{_count(w.trained_tokens):>9}"
        )
    return lines


def _format_hours(plan: Plan) -> list[str]:
    stages = list(plan.hours[0])
    lines = [
        f"Estimated hours on one {plan.gpu.name} (cost model: docs/scaling.md; ?: unknown size):",
        f"  {'pass':<18} " + " ".join(f"{s:>13}" for s in stages) + f" {'total':>8}",
    ]
    grand: float | None = 0.0
    for work, hours in zip(plan.work, plan.hours, strict=True):
        values = list(hours.values())
        total = None if None in values else sum(values)
        grand = None if grand is None or total is None else grand + total
        cells = " ".join(f"{_hours(h):>13}" for h in values)
        lines.append(f"  {work.label:<18} {cells} {_hours(total):>8}")
    lines.append(f"  {'all':<18} {'':>{14 * len(stages) - 1}} {_hours(grand):>8}")
    return lines


def format_plan(plan: Plan) -> str:
    """The plan as text: a headline, then models, memory per stage, tokens and hours."""
    cfg = plan.cfg
    head = (
        f"Plan for {plan.source} (run {cfg.run_name}): {cfg.iterations} iterations x "
        f"{cfg.data.prompts_per_iteration} prompts, search w={cfg.search.beams} "
        f"k={cfg.search.children} l={cfg.search.chunk_tokens}, {cfg.sampling.max_new_tokens} new tokens"
    )
    sections = [_format_models(plan), _format_memory(plan), _format_work(plan), _format_hours(plan)]
    return "\n\n".join([head, *("\n".join(s) for s in sections)])
