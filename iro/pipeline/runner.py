"""IRO's stages bound to the artifact store: each call reuses a finished artifact or builds it.

Each stage hashes only the config slice it depends on plus its parents' ids, so:
- rerunning a config reuses every finished stage (resume);
- changing, say, the evaluation settings leaves rollouts and value models untouched;
- iteration k finds V_1..V_{k-1} by recomputing their ids; a missing one is an error that names
  it, never a silent recomputation.

No Prefect here: `tasks/` wraps these methods and mirrors their outputs in the Prefect UI.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from iro.base.config import RunConfig
from iro.base.data import eval_slice, iteration_slice, load_prompts
from iro.base.store import Artifact, ArtifactStore
from iro.pipeline import stages
from iro.pipeline.decoder import decode
from iro.pipeline.reweight import reweight

log = logging.getLogger(__name__)

TABLE = "table.parquet"
VALUE_DIR = "value_model"
# Bump a stage's version when its output changes meaning: old artifacts then stop matching.
ENGINE_KNOBS = {"engine", "gpu_memory_utilization", "cpu_kv_cache_gib"}
STAGE_VERSIONS = {"rollout": 1, "score": 1, "reweight": 1, "value": 1, "eval": 1}


class MissingArtifactError(RuntimeError):
    """A stage's input was never produced (for example iteration k-1 did not finish)."""


class Pipeline:
    def __init__(self, cfg: RunConfig, store: ArtifactStore | None = None):
        self.cfg = cfg
        self.store = store or ArtifactStore(cfg.store.root)

    # -- config slices: what each stage's output depends on --

    def _generation_slice(self) -> dict[str, Any]:
        c = self.cfg
        return {
            # where and with how much memory the policy runs does not change its seeded samples
            "policy": c.policy.model_dump(exclude=ENGINE_KNOBS),
            "data": c.data.model_dump(exclude={"eval_prompts", "eval_split"}),
            "sampling": c.sampling.model_dump(),
            "seed": c.seed,
        }

    def _value_inference_slice(self) -> dict[str, Any]:
        return self.cfg.value.model_dump(include={"beta", "max_length"})

    def _stage(
        self,
        stage: str,
        config: dict[str, Any],
        parents: list[Artifact],
        build: Callable[[Path], dict[str, Any]],
        only_existing: bool,
    ) -> Artifact:
        version = STAGE_VERSIONS[stage]
        artifact_id = self.store.artifact_id(stage, version, config, parents)
        existing = self.store.find(stage, artifact_id)
        if existing is not None:
            log.info("reusing %s artifact %s", stage, artifact_id)
            return existing
        if only_existing:
            raise MissingArtifactError(
                f"{stage} artifact {artifact_id} does not exist in {self.store.root}"
            )
        log.info("building %s artifact %s", stage, artifact_id)
        return self.store.create(stage, version, config, parents, build, self.cfg.run_name)

    # -- stages --

    def rollout(
        self,
        iteration: int,
        values: list[Artifact],
        progress: stages.Progress | None = None,
        only_existing: bool = False,
    ) -> Artifact:
        """Candidates from pi_{k-1}: plain samples for k = 1, the guided search after."""
        c = self.cfg
        if iteration == 1:
            settings = stages.sample_settings(c, c.rollout.samples_per_prompt)
            method = {"rollout": c.rollout.model_dump()}
        else:
            settings = stages.guided_settings(c)
            method = {"search": c.search.model_dump(), "value": self._value_inference_slice()}
        config = {**self._generation_slice(), **method, "iteration": iteration}

        def build(out: Path) -> dict[str, Any]:
            train = load_prompts(c.data, c.data.train_split)
            prompts = iteration_slice(train, iteration, c.data.prompts_per_iteration, c.seed)
            seed = c.seed * 1000 + iteration
            table = stages.generate(
                c, prompts, settings, [v.file(VALUE_DIR) for v in values], seed, progress
            )
            table.to_parquet(out / TABLE)
            return {
                "prompts": len(prompts),
                "candidates": len(table),
                "mean_tokens": float(table["num_tokens"].mean()),
                "ended_fraction": float(table["ended"].mean()),
            }

        return self._stage("rollout", config, values, build, only_existing)

    def score(self, rollout: Artifact, only_existing: bool = False) -> Artifact:
        def build(out: Path) -> dict[str, Any]:
            scored = stages.score(stages.build_run_reward(self.cfg), rollout.table())
            scored.to_parquet(out / TABLE)
            return {"reward_mean": float(scored["reward"].mean()), "rows": len(scored)}

        config = {"reward": self.cfg.reward.model_dump(exclude={"batch_size"})}
        return self._stage("score", config, [rollout], build, only_existing)

    def reweight(self, scored: Artifact, only_existing: bool = False) -> Artifact:
        r = self.cfg.reweight

        def build(out: Path) -> dict[str, Any]:
            table, metrics = reweight(
                scored.table(), r.scheme, r.beta, r.resample_size, seed=self.cfg.seed
            )
            table.to_parquet(out / TABLE)
            return metrics

        config = {"reweight": r.model_dump(), "seed": self.cfg.seed}
        return self._stage("reweight", config, [scored], build, only_existing)

    def train_value(
        self, reweighted: Artifact, previous: Artifact | None, only_existing: bool = False
    ) -> Artifact:
        v = self.cfg.value
        init = previous if (previous is not None and v.init_from_previous) else None

        def build(out: Path) -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="iro-trainer-") as work:
                init_dir = init.file(VALUE_DIR) if init else None
                return stages.train_value(
                    self.cfg, reweighted.table(), init_dir, out / VALUE_DIR, Path(work)
                )

        config = {"value": v.model_dump(exclude={"score_batch_size"}), "seed": self.cfg.seed}
        parents = [reweighted] + ([init] if init else [])
        return self._stage("value", config, parents, build, only_existing)

    def iteration(
        self, iteration: int, values: list[Artifact], progress: stages.Progress | None = None
    ) -> dict[str, Artifact]:
        """Rollout, score, reweight and train V_k, given V_1..V_{k-1}."""
        rollout = self.rollout(iteration, values, progress)
        scored = self.score(rollout)
        reweighted = self.reweight(scored)
        value = self.train_value(reweighted, values[-1] if values else None)
        return {"rollout": rollout, "score": scored, "reweight": reweighted, "value": value}

    def value_chain(self, upto: int) -> list[Artifact]:
        """V_1..V_upto from the store, without computing anything; raises if one is missing."""
        values: list[Artifact] = []
        for k in range(1, upto + 1):
            try:
                rollout = self.rollout(k, values, only_existing=True)
                scored = self.score(rollout, only_existing=True)
                reweighted = self.reweight(scored, only_existing=True)
                previous = values[-1] if values else None
                values.append(self.train_value(reweighted, previous, only_existing=True))
            except MissingArtifactError as err:
                raise MissingArtifactError(
                    f"iteration {k} of run {self.cfg.run_name!r} has not finished with this "
                    f"config ({err}); run iteration {k} first"
                ) from None
        return values

    def evaluate(
        self, method: str, values: list[Artifact], progress: stages.Progress | None = None
    ) -> Artifact:
        """Held-out outputs of a method and their reward and win rate against the reference.

        base: one sample; bon: best of U = w*k samples by reward; iro: the guided search with
        the given value models, final pick best-of-(w*k) by reward; args: ARGS token-level
        decoding with the run's reward (decode.token_top_k, decode.args_weight, decode.greedy).
        """
        c = self.cfg
        u = c.search.samples_per_prompt
        settings = None  # args decodes token by token, not through the search
        if method == "base":
            settings = stages.sample_settings(c, 1)
        elif method == "bon":
            settings = stages.sample_settings(c, u)
        elif method == "iro":
            if not values:
                raise ValueError("evaluating IRO needs at least one value model")
            settings = stages.guided_settings(c)
        elif method != "args":
            raise ValueError(f"unknown evaluation method {method!r}")
        config = {
            **self._generation_slice(),
            "data": c.data.model_dump(exclude={"prompts_per_iteration", "train_split"}),
            "reward": c.reward.model_dump(exclude={"batch_size"}),
            "method": method,
        }
        if settings is not None:  # stop strings are already in the sampling slice
            config["settings"] = {k: v for k, v in asdict(settings).items() if k != "stop_strings"}
        else:
            config["decode"] = c.decode.model_dump(include={"token_top_k", "args_weight", "greedy"})
        if method == "iro":
            config["value"] = self._value_inference_slice()

        def build(out: Path) -> dict[str, Any]:
            prompts = eval_slice(load_prompts(c.data, c.data.eval_split), c.data.eval_prompts)
            if prompts["reference"].isna().any():
                raise ValueError(
                    "evaluation needs a reference for every prompt (data.reference_field)"
                )
            reward = stages.build_run_reward(c)
            seed = c.seed + 7919
            if settings is None:
                outputs = stages.score(reward, decode(c, prompts, method, [], seed))
            else:
                value_dirs = [v.file(VALUE_DIR) for v in values]
                candidates = stages.generate(c, prompts, settings, value_dirs, seed, progress)
                outputs = stages.best_per_prompt(stages.score(reward, candidates))
            reference_rewards = reward.score(
                prompts["prompt"].tolist(), prompts["reference"].tolist()
            )
            by_id = dict(zip(prompts["id"], reference_rewards, strict=True))
            outputs["reference_reward"] = outputs["prompt_id"].map(by_id)
            outputs.to_parquet(out / TABLE)
            metrics = stages.win_rate_metrics(outputs, outputs["reference_reward"].to_numpy())
            metrics["reference_mean_reward"] = float(reference_rewards.mean())
            metrics["samples_per_prompt"] = settings.beams * settings.children if settings else 1
            return metrics

        return self._stage("eval", config, list(values), build, only_existing=False)
