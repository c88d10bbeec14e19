"""Where the time of one value-guided decode goes: cProfile over IRO's chunk search.

Decodes the first --prompts held-out prompts with the value models of a finished run (the full
benchmark's, by default: run `make bench` first, or point --store at any store holding that
run), and writes the functions that take the most time, inclusive and exclusive, to
benchmarks/results/search_profile-<dtype>.txt. Run alone: the numbers are wall time on shared
cores.

    .venv/bin/python benchmarks/profile_search.py --store .iro/store --prompts 24
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

from iro.app.environment import prepare_environment
from iro.core.config import load_config
from iro.core.data import eval_slice, load_prompts
from iro.core.fsutil import atomic_write_text
from iro.pipeline.decoder import decode_scored
from iro.pipeline.runner import VALUE_DIR, Pipeline

RESULTS = Path(__file__).parent / "results"
FULL = {"data.prompts_per_iteration": 128, "data.eval_prompts": 120, "iterations": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--store", required=True, help="a store holding the run's value models")
    parser.add_argument("--run-name", default="bench-full")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    args = parser.parse_args()
    prepare_environment()

    trained = load_config(
        args.config, {**FULL, "run_name": args.run_name, "store.root": args.store}
    )
    pipeline = Pipeline(trained)
    values = []
    for k in range(1, trained.iterations + 1):  # found in the store; trained if missing
        values.append(pipeline.iteration(k, values)["value"])
    dirs = [v.file(VALUE_DIR) for v in values]
    cfg = load_config(
        args.config,
        {**FULL, "run_name": args.run_name, "store.root": args.store,
         "policy.dtype": args.dtype, "value.score_dtype": args.dtype},
    )  # fmt: skip
    prompts = eval_slice(load_prompts(cfg.data, cfg.data.eval_split), args.prompts)
    decode_scored(cfg, prompts.head(2), "iro", dirs, seed=1)  # engine start, caches warm

    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    decode_scored(cfg, prompts, "iro", dirs, seed=7919)
    profile.disable()
    seconds = time.perf_counter() - started

    text = io.StringIO()
    text.write(f"IRO decode, {args.prompts} prompts, {len(dirs)} value models, {args.dtype}: ")
    text.write(f"{seconds:.1f} s\n")
    for order in ("cumulative", "tottime"):
        pstats.Stats(profile, stream=text).sort_stats(order).print_stats(30)
    out = RESULTS / f"search_profile-{args.dtype}.txt"
    atomic_write_text(out, text.getvalue())
    print(f"{seconds:.1f} s; written to {out}")


if __name__ == "__main__":
    main()
