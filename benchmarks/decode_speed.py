"""Speed of value-guided chunk-level search: vLLM vs transformers vs a reference-style loop.

All three run the same algorithm with the same settings (default: 32 held-out prompts of the demo
task, w = k = 4, l = 8, 48 new tokens, one 4-layer value model on the embedded SmolLM2):

- vllm:        this project's search on vLLM (every prompt's beams of a step in one batch, prefix
               caching) with incremental, batched value scoring;
- hf:          the same search code on the transformers engine;
- reference:   one prompt at a time, one beam at a time, `generate` re-reading the whole prefix at
               every chunk and the value model re-reading prompt + response for every candidate,
               as the reference implementations of IRO/CBS do.

Throughput is policy tokens sampled per second (every candidate's new tokens, which is the work
the algorithm asks for); value-scoring time is reported as a fraction of the wall time. Results go
to benchmarks/results/decode_speed.json. The reference loop takes ~50 s a prompt here, so
`--reference-prompts 8` bounds the run; its rate does not depend on how many prompts it gets.

    .venv/bin/python benchmarks/decode_speed.py [--prompts 32] [--engines vllm,hf,reference]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from iro.base.config import RunConfig
from iro.base.data import eval_slice, load_prompts, render_prompts
from iro.base.engines.base import SamplingSettings
from iro.base.engines.factory import get_engine
from iro.base.engines.hf_engine import HFEngine
from iro.base.fsutil import atomic_write_json
from iro.base.models import resolve_model
from valuefn.encoding import encode_pair
from valuefn.model import TokenValueModel
from valuefn.scoring import ValueEnsemble
from valuefn.search import Candidate, SearchSettings, guided_search, select_diversity_first

RESULTS = Path(__file__).parent / "results" / "decode_speed.json"


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
    sampled = 0
    original = engine.continue_batch

    def counting(requests, sampling_settings):
        nonlocal sampled
        out = original(requests, sampling_settings)
        sampled += sum(len(c.token_ids) + c.ended for cs in out for c in cs)
        return out

    engine.continue_batch = counting
    started = time.perf_counter()
    try:
        guided_search(engine, tokenizer, texts, ids, settings, sampling, scorer, seed=0)
    finally:
        engine.continue_batch = original
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "sampled_tokens": sampled, "value_seconds": scorer.seconds}


@torch.no_grad()
def reference_loop(
    model, tokenizer, value_model, texts, ids, settings, sampling, max_length
) -> dict:
    """One prompt, one beam, one candidate at a time; no cache across chunks or candidates."""
    value_seconds, sampled = 0.0, 0
    started = time.perf_counter()
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
                for sample in out:
                    done = eos in sample
                    new = sample[: sample.index(eos)] if done else sample
                    sampled += len(new) + done
                    candidates.append((resp + new, done))
            first = False
            scored = []
            value_started = time.perf_counter()
            for resp, ended in candidates:
                text = tokenizer.decode(resp, skip_special_tokens=True)
                pair = encode_pair(tokenizer, prompt_text, text, ended, max_length)
                input_ids = torch.tensor([pair.input_ids])
                value = value_model(input_ids, torch.ones_like(input_ids))[0, -1].item()
                scored.append((resp, ended, text, value))
            value_seconds += time.perf_counter() - value_started
            pool = [Candidate(tuple(r), t, e, v) for r, e, t, v in scored]
            beams = [
                (list(pool[i].response_ids), pool[i].ended)
                for i in select_diversity_first(pool, settings.beams)
            ]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "sampled_tokens": sampled, "value_seconds": value_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--chunk-tokens", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--value-layers", type=int, default=4)
    parser.add_argument("--kv-cache-gib", type=int, default=RunConfig().policy.cpu_kv_cache_gib)
    parser.add_argument("--engines", default="vllm,hf,reference", help="comma-separated subset")
    parser.add_argument(
        "--reference-prompts", type=int, default=None,
        help="run the reference loop on the first N prompts only (default: all); it handles one "
        "prompt at a time, so its rate does not depend on N",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cfg = RunConfig(policy={"cpu_kv_cache_gib": args.kv_cache_gib})
    engines = set(args.engines.split(","))
    model_path = resolve_model(cfg.policy.model)
    settings = SearchSettings(args.beams, args.children, args.chunk_tokens, args.max_new_tokens)
    sampling = SamplingSettings(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.top_k)
    prompts = eval_slice(load_prompts(cfg.data, cfg.data.eval_split), args.prompts)

    torch.manual_seed(0)
    value_model = TokenValueModel.from_causal_lm(model_path, args.value_layers).eval()
    hf = HFEngine(model_path, dtype="float32", trust_remote_code=False, batch_size=64)
    texts = render_prompts(hf.tokenizer, cfg.data, prompts["prompt"].tolist())
    ids = [hf.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        value_model.save(Path(tmp) / "v", hf.tokenizer)

        def fresh_ensemble() -> ValueEnsemble:  # each run starts with cold prompt caches
            return ValueEnsemble.load([Path(tmp) / "v"], [1.0], max_length=512, batch_size=32)

        results = {}
        if "vllm" in engines:
            vllm = get_engine(cfg.policy, None, seed=0)
            warm = (texts[:2], ids[:2], settings, sampling, fresh_ensemble())
            run_search(vllm, hf.tokenizer, *warm)
            results["vllm"] = run_search(
                vllm, hf.tokenizer, texts, ids, settings, sampling, fresh_ensemble()
            )
            print("vllm", results["vllm"], flush=True)
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

    for r in results.values():
        r["tokens_per_second"] = r["sampled_tokens"] / r["seconds"]
        r["value_fraction"] = r["value_seconds"] / r["seconds"]
    if "reference" in results:
        ref = results["reference"]["tokens_per_second"]
        for name in ("vllm", "hf"):
            results[name]["speedup_vs_reference"] = results[name]["tokens_per_second"] / ref
    report = {
        "benchmark": "value-guided chunk-level search throughput",
        "settings": {
            **vars(args),
            "out": str(args.out),
            "prompts_mean_tokens": float(np.mean([len(i) for i in ids])),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    atomic_write_json(args.out, report)
    print(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
