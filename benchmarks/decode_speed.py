"""Speed of value-guided decoding: chunk-level search (vLLM vs transformers vs a reference-style
loop) and token-level VAS (scalar vs vocabulary value head).

All three run the same algorithm with the same settings (default: 32 held-out prompts of the demo
task, w = k = 4, l = 8, 48 new tokens, one 4-layer value model on the embedded SmolLM2):

- vllm:        this project's search on vLLM (every prompt's beams of a step in one batch, prefix
               caching) with incremental, batched value scoring;
- hf:          the same search code on the transformers engine;
- reference:   one prompt at a time, one beam at a time, `generate` re-reading the whole prefix at
               every chunk and the value model re-reading prompt + response for every candidate,
               as the reference implementations of IRO/CBS do.

Throughput is policy tokens sampled per second (every candidate's new tokens, which is the work
the algorithm asks for); value-scoring time is reported as a fraction of the wall time. Every run
also reports its `iro.core.cost` counters: policy tokens (the positions the policy computed: on
vLLM, what its scheduler put through the model, prefixes recomputed because only whole 32-token KV
blocks are shared included) and value tokens (what the value models read). The reference loop runs
the model itself, so it counts its own calls with the same counter. Results go to
benchmarks/results/decode_speed.json. The reference loop takes ~50 s a prompt here, so
`--reference-prompts 8` bounds the run; its rate does not depend on how many prompts it gets.

"dtypes" measures the vLLM path the way the pipeline runs it, once per setting of the policy's
precision (with value.score_dtype) and policy.compile: float32, the earlier default; bfloat16, the
demo's; bfloat16 compiled. Each runs in its own process so that no two engines share the cores:
plain rollouts at 128 and 512 sequences (--rollout-prompts training prompts, which the search never
sees, with n = 4 and n = 16) and the guided search above. It is written under "dtypes", beside the
targets.

"vas" (token-level value guidance, `valuefn.token_guidance`) decodes --vas-prompts prompts of
--vas-tokens tokens each with top-k --vas-top-k, on transformers with a value model made from the
policy (fresh heads: speed does not depend on the weights), three ways: a scalar head one prompt
at a time (k one-token extensions per step), a scalar head on the whole batch (rows * k), and a
vocabulary head on the whole batch (the candidates' values gathered from the state it holds: one
value forward per step). Its throughput is response tokens per second; it is written under
"token_guidance", keeping the file's other entries, with the load average as a contention record.

    .venv/bin/python benchmarks/decode_speed.py [--prompts 32] [--engines vllm,hf,reference,vas]
    .venv/bin/python benchmarks/decode_speed.py --engines vas    # token-level VAS only
    .venv/bin/python benchmarks/decode_speed.py --engines dtypes # float32, bf16, bf16 compiled
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from iro.core.config import RunConfig
from iro.core.cost import count_sampling, count_value_tokens, measure
from iro.core.data import eval_slice, load_prompts, render_prompts
from iro.core.engines.base import Continuation, ContinuationRequest, SamplingSettings
from iro.core.engines.factory import get_engine
from iro.core.engines.hf_engine import HFEngine, continuation
from iro.core.fsutil import atomic_write_json
from iro.core.models import resolve_model
from iro.valuefn.encoding import encode_pair
from iro.valuefn.model import TokenValueModel
from iro.valuefn.scoring import LoadedValue, ValueEnsemble
from iro.valuefn.search import Candidate, SearchSettings, guided_search, select_diversity_first
from iro.valuefn.token_guidance import GuidedPrompt, TokenGuidanceSettings, ValueShift, decode

RESULTS = Path(__file__).parent / "results" / "decode_speed.json"
DTYPES = ("float32", "bfloat16")  # policy dtype and value.score_dtype together
# the "dtypes" runs: name -> (dtype, policy.compile)
VARIANTS = {
    "float32": ("float32", False),
    "bfloat16": ("bfloat16", False),
    "bfloat16-compiled": ("bfloat16", True),
}
ROLLOUT_SAMPLES = (4, 16)  # plain samples per prompt: 128 and 512 sequences on 32 prompts
# from issue 12: half the compute ceiling (~1100 tokens/s), twice the first measured search rate
TARGETS = {"plain_tokens_per_second": 550, "search_tokens_per_second": 330, "value_fraction": 0.15}


class TimedScorer:
    def __init__(self, ensemble: ValueEnsemble):
        self.ensemble = ensemble
        self.seconds = 0.0

    def __call__(self, prompts, responses, ended):
        started = time.perf_counter()
        scores = self.ensemble.score(prompts, responses, ended)
        self.seconds += time.perf_counter() - started
        return scores


def run_search(engine, tokenizer, texts, ids, settings, sampling, ensemble) -> dict:
    scorer = TimedScorer(ensemble)
    with measure() as cost:
        guided_search(engine, tokenizer, texts, ids, settings, sampling, scorer, seed=0)
    return {**asdict(cost), "value_seconds": scorer.seconds}


def plain_rollout(engine, ids, n: int, max_new_tokens: int, sampling) -> dict:
    """n plain samples of every prompt in one engine call, as a rollout draws them."""
    requests = [
        ContinuationRequest(prefix_ids=tuple(prompt), n=n, max_tokens=max_new_tokens, seed=j)
        for j, prompt in enumerate(ids)
    ]
    with measure() as cost:
        engine.continue_batch(requests, sampling)
    return {
        "sequences": len(ids) * n,
        **asdict(cost),
        "tokens_per_second": cost.sampled_tokens / cost.seconds,
    }


def precision_run(args, variant: str) -> dict:
    """This script's vLLM measurements with one of VARIANTS' settings, in a fresh process."""
    dtype, compiled = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "part.json"
        command = [
            sys.executable,
            __file__,
            "--engines",
            "vllm",
            "--dtype",
            dtype,
            *(["--compile"] if compiled else []),
            "--out",
            str(out),
        ]
        for name in ("prompts", "rollout_prompts", "beams", "children", "chunk_tokens"):
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        subprocess.run(command, check=True)
        part = json.loads(out.read_text())
    return {**part["results"]["vllm"], "plain": part["plain"]}


def precision_report(args) -> dict:
    """The VARIANTS on vLLM, with the targets each meets."""
    runs = {variant: precision_run(args, variant) for variant in VARIANTS}
    for run in runs.values():
        run["meets"] = {
            "plain_tokens_per_second": min(p["tokens_per_second"] for p in run["plain"])
            >= TARGETS["plain_tokens_per_second"],
            "search_tokens_per_second": run["tokens_per_second"]
            >= TARGETS["search_tokens_per_second"],
            "value_fraction": run["value_fraction"] < TARGETS["value_fraction"],
        }
    return {
        "benchmark": "vLLM plain rollouts and guided search: float32, bfloat16 (policy and value "
        "scoring) and bfloat16 with the policy compiled, each in its own process",
        "targets": TARGETS,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": runs,
    }


@torch.no_grad()
def reference_loop(
    model, tokenizer, value_model, texts, ids, settings, sampling, max_length
) -> dict:
    """One prompt, one beam, one candidate at a time; no cache across chunks or candidates."""
    with measure() as cost:
        value_seconds = _reference_search(
            model, tokenizer, value_model, texts, ids, settings, sampling, max_length
        )
    return {**asdict(cost), "value_seconds": value_seconds}


def _reference_search(
    model, tokenizer, value_model, texts, ids, settings, sampling, max_length
) -> float:
    """`reference_loop`'s work, counting what its model and value model read as it goes (they
    run outside the engines and the ensemble that count); returns the value-scoring seconds."""
    value_seconds = 0.0
    eos = tokenizer.eos_token_id
    for prompt_text, prompt_ids in zip(texts, ids, strict=True):
        beams = [([], False)]
        first = True
        while any(not ended and len(resp) < settings.max_new_tokens for resp, ended in beams):
            candidates = []
            for resp, ended in beams:
                if ended or len(resp) >= settings.max_new_tokens:
                    candidates.append((resp, ended))
                    continue
                n = settings.beams * settings.children if first else settings.children
                prefix = torch.tensor([list(prompt_ids) + resp])
                out = model.generate(
                    input_ids=prefix, attention_mask=torch.ones_like(prefix), do_sample=True,
                    temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                    num_return_sequences=n, pad_token_id=eos, eos_token_id=eos,
                    max_new_tokens=min(settings.chunk_tokens, settings.max_new_tokens - len(resp)),
                )[:, prefix.shape[1]:].tolist()  # fmt: skip
                continuations = [continuation(sample, eos) for sample in out]
                count_sampling([prefix.shape[1]], [continuations])
                candidates += [(resp + list(c.token_ids), c.ended) for c in continuations]
            first = False
            scored = []
            value_started = time.perf_counter()
            for resp, ended in candidates:
                text = tokenizer.decode(resp, skip_special_tokens=True)
                pair = encode_pair(tokenizer, prompt_text, text, ended, max_length)
                input_ids = torch.tensor([pair.input_ids])
                value = value_model(input_ids, torch.ones_like(input_ids))[0, -1].item()
                count_value_tokens(len(pair.input_ids))
                scored.append((resp, ended, text, value))
            value_seconds += time.perf_counter() - value_started
            pool = [Candidate(tuple(r), t, e, v) for r, e, t, v in scored]
            beams = [
                (list(pool[i].response_ids), pool[i].ended)
                for i in select_diversity_first(pool, settings.beams)
            ]
    return value_seconds


VAS_RUNS = (("scalar", 1), ("scalar", None), ("vocabulary", None))  # (head, batch: all if None)


def vas_run(policy, tokenizer, prompts, value_model, settings, batch_size) -> dict:
    """Token-level VAS on `prompts` with one value model, timed; tokens are response tokens."""
    ensemble = ValueEnsemble([LoadedValue(value_model, tokenizer, 1.0)], max_length=512)
    scorer = ValueShift(ensemble, beta=1.0, policy_tokenizer=tokenizer)
    with measure() as cost:
        outputs = decode(policy, tokenizer.eos_token_id, prompts, scorer, settings, batch_size)
        # token-level decoding runs the policy itself, outside the engines that count
        count_sampling(
            [len(p.ids) for p in prompts], [[Continuation(tuple(r), e)] for r, e in outputs]
        )
    tokens = cost.sampled_tokens
    return {"seconds": cost.seconds, "tokens": tokens, "tokens_per_second": tokens / cost.seconds}


def token_guidance_speed(args, model_path: str, hf: HFEngine, texts, ids) -> dict:
    """Scalar head per prompt and batched vs vocabulary head batched, same prompts and settings."""
    n = args.vas_prompts
    prompts = [GuidedPrompt(ids[j], texts[j], texts[j], seed=j) for j in range(n)]
    settings = TokenGuidanceSettings(top_k=args.vas_top_k, max_new_tokens=args.vas_tokens)
    load_before = os.getloadavg()[0]
    results = {}
    for head, batch_size in VAS_RUNS:
        torch.manual_seed(0)
        value_model = TokenValueModel.from_causal_lm(model_path, args.value_layers, head=head)
        name = f"{head}_{'per_prompt' if batch_size == 1 else 'batched'}"
        results[name] = vas_run(
            hf.model, hf.tokenizer, prompts, value_model.eval(), settings, batch_size or n
        )
        print("vas", name, results[name], flush=True)
    base = results["scalar_per_prompt"]["tokens_per_second"]
    for r in results.values():
        r["speedup_vs_scalar_per_prompt"] = r["tokens_per_second"] / base
    return {
        "benchmark": "token-level VAS throughput (response tokens per second)",
        "settings": {
            "prompts": n,
            "max_new_tokens": args.vas_tokens,
            "top_k": args.vas_top_k,
            "value_layers": args.value_layers,
            "beta": 1.0,
            "value_heads": "fresh",
            "policy_dtype": "float32",
            "prompts_mean_tokens": float(np.mean([len(p.ids) for p in prompts])),
        },
        "machine": machine(),
        "contention": {
            "note": args.note,
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}


def previous_report(path: Path) -> dict:
    """The results file as it stands: a run rewrites only the parts it measured."""
    return json.loads(path.read_text()) if path.is_file() else {}


def chunk_report(args, ids, results: dict) -> dict:
    """The chunk-level search entries of the results file."""
    for r in results.values():
        r["tokens_per_second"] = r["sampled_tokens"] / r["seconds"]
        r["value_fraction"] = r["value_seconds"] / r["seconds"]
    if "reference" in results:
        ref = results["reference"]["tokens_per_second"]
        for name in ("vllm", "hf"):
            results[name]["speedup_vs_reference"] = results[name]["tokens_per_second"] / ref
    return {
        "benchmark": "value-guided chunk-level search throughput",
        "settings": {
            **vars(args),
            "out": str(args.out),
            "prompts_mean_tokens": float(np.mean([len(i) for i in ids])),
        },
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--rollout-prompts", type=int, default=32, help="for plain rollouts")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="policy dtype and value scoring dtype"
    )
    parser.add_argument("--compile", action="store_true", help="policy.compile (vLLM only)")
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--chunk-tokens", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--value-layers", type=int, default=4)
    parser.add_argument("--kv-cache-gib", type=int, default=RunConfig().policy.cpu_kv_cache_gib)
    parser.add_argument(
        "--engines", default="vllm,hf,reference,vas", help="comma-separated subset ('vas' alone: "
        "token-level guidance only; 'dtypes': vLLM at float32, bfloat16, bfloat16 compiled)",
    )  # fmt: skip
    parser.add_argument("--vas-prompts", type=int, default=8)
    parser.add_argument("--vas-tokens", type=int, default=32)
    parser.add_argument("--vas-top-k", type=int, default=10)
    parser.add_argument(
        "--note", default="", help="recorded with the token-level numbers (e.g. machine contention)"
    )
    parser.add_argument(
        "--reference-prompts", type=int, default=None,
        help="run the reference loop on the first N prompts only (default: all); it handles one "
        "prompt at a time, so its rate does not depend on N",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    engines = set(args.engines.split(","))
    if "dtypes" in engines:
        report = previous_report(args.out)
        report["dtypes"] = precision_report(args)
        atomic_write_json(args.out, report)
        print(json.dumps(report["dtypes"]["results"], indent=2))
        engines.discard("dtypes")
        if not engines:
            return
    cfg = RunConfig(
        policy={"cpu_kv_cache_gib": args.kv_cache_gib, "dtype": args.dtype, "compile": args.compile}
    )
    model_path = resolve_model(cfg.policy.model)
    settings = SearchSettings(args.beams, args.children, args.chunk_tokens, args.max_new_tokens)
    sampling = SamplingSettings(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.top_k)
    prompts = eval_slice(load_prompts(cfg.data, cfg.data.eval_split), args.prompts)
    rollout_prompts = load_prompts(cfg.data, cfg.data.train_split).head(args.rollout_prompts)

    torch.manual_seed(0)
    value_model = TokenValueModel.from_causal_lm(model_path, args.value_layers).eval()
    hf = HFEngine(model_path, dtype="float32", trust_remote_code=False, batch_size=64)
    texts = render_prompts(hf.tokenizer, cfg.data, prompts["prompt"].tolist())
    ids = [hf.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    report = previous_report(args.out)
    if "vas" in engines:
        report["token_guidance"] = token_guidance_speed(args, model_path, hf, texts, ids)
    with tempfile.TemporaryDirectory() as tmp:
        value_model.save(Path(tmp) / "v", hf.tokenizer)

        def fresh_ensemble() -> ValueEnsemble:  # each run starts with cold prompt caches
            return ValueEnsemble.load(
                [Path(tmp) / "v"], [1.0], max_length=512, batch_size=32,
                score_dtype=getattr(torch, args.dtype),
            )  # fmt: skip

        results = {}
        if "vllm" in engines:
            vllm = get_engine(cfg.policy, None, seed=0)
            warm = (texts[:2], ids[:2], settings, sampling, fresh_ensemble())
            run_search(vllm, hf.tokenizer, *warm)
            results["vllm"] = run_search(
                vllm, hf.tokenizer, texts, ids, settings, sampling, fresh_ensemble()
            )
            print("vllm", results["vllm"], flush=True)
            rollout_texts = render_prompts(
                hf.tokenizer, cfg.data, rollout_prompts["prompt"].tolist()
            )
            rollout_ids = [
                hf.tokenizer(t, add_special_tokens=False).input_ids for t in rollout_texts
            ]
            report["plain"] = [
                plain_rollout(vllm, rollout_ids, n, args.max_new_tokens, sampling)
                for n in ROLLOUT_SAMPLES
            ]
            print("plain", report["plain"], flush=True)
        if "hf" in engines:
            results["hf"] = run_search(
                hf, hf.tokenizer, texts, ids, settings, sampling, fresh_ensemble()
            )
            print("hf", results["hf"], flush=True)
        if "reference" in engines:
            n = args.reference_prompts or len(texts)
            results["reference"] = reference_loop(
                hf.model, hf.tokenizer, value_model, texts[:n], ids[:n], settings, sampling, 512
            )
            results["reference"]["prompts"] = n
            print("reference", results["reference"], flush=True)

    if results:
        report.update(chunk_report(args, ids, results))
    atomic_write_json(args.out, report)
    print(json.dumps(report.get("token_guidance", {}).get("results", {}) | results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
