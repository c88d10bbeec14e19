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
import shutil
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from iro.core.config import RunConfig
from iro.core.data import eval_slice, iteration_slice, load_prompts
from iro.core.fsutil import directory_lock
from iro.core.methods import get_method
from iro.core.store.local import WORK, Artifact
from iro.core.store.protocol import Store
from iro.core.store.remote import open_store
from iro.pipeline import ivl
from iro.pipeline.decoder import decode_scored
from iro.pipeline.evaluation import evaluation_metrics
from iro.pipeline.execution import generate, score_rows
from iro.pipeline.generation import Progress
from iro.pipeline.identity import config_slice
from iro.pipeline.methods import rollout_settings, samples_per_prompt
from iro.pipeline.scoring import build_run_reward
from iro.pipeline.value_training import train_value, training_arguments
from iro.valuefn.reweight import reweight

log = logging.getLogger(__name__)

TABLE = "table.parquet"
VALUE_DIR = "value_model"
# Bump a stage's version when its output changes meaning: old artifacts then stop matching.
STAGE_VERSIONS = {"rollout": 2, "score": 1, "reweight": 2, "value": 3, "eval": 2, "ivl": 1}


class MissingArtifactError(RuntimeError):
    """A stage's input was never produced (for example iteration k-1 did not finish)."""


class Pipeline:
    def __init__(self, cfg: RunConfig, store: Store | None = None):
        self.cfg = cfg
        self.store = store or open_store(cfg.store)
        # a misspelt value.training key stops here, not after the rollout has run
        with tempfile.TemporaryDirectory(prefix="iro-check-") as work:
            training_arguments(cfg, Path(work))

    def _stage(
        self,
        stage: str,
        config: dict[str, Any],
        parents: list[Artifact],
        build: Callable[[Path], dict[str, Any]],
        only_existing: bool,
        work: Path | None = None,
    ) -> Artifact:
        """Reuse or build; `work`: the build's resumable state (`work_dir`), locked while it
        builds and removed once the artifact exists."""
        version = STAGE_VERSIONS[stage]
        artifact_id = self.store.artifact_id(stage, version, config, parents)
        existing = self.store.find(stage, artifact_id)
        if existing is not None:
            log.info("reusing %s artifact %s", stage, artifact_id)
            self._remove_work(work)  # left by a process killed just after it published
            return existing
        if only_existing:
            raise MissingArtifactError(
                f"{stage} artifact {artifact_id} does not exist in {self.store.root}"
            )
        log.info("building %s artifact %s", stage, artifact_id)
        with self._work_lock(work):
            artifact = self.store.create(stage, version, config, parents, build, self.cfg.run_name)
            self._remove_work(work)
        return artifact

    def work_dir(self, stage: str, config: dict[str, Any], parents: list[Artifact]) -> Path:
        """Where the build of this artifact keeps state across attempts (see store.WORK)."""
        artifact_id = self.store.artifact_id(stage, STAGE_VERSIONS[stage], config, parents)
        return self.store.root / WORK / stage / artifact_id

    def _work_lock(self, work: Path | None):
        """One builder per work directory: two runs can share an artifact id (the run lock is
        per run), and two trainers rotating the same checkpoints would break each other.

        The lock file lives inside `work` and goes with it once the artifact is published: a
        process still waiting on the removed file then only finds the artifact and builds nothing.
        """
        if work is None:
            return nullcontext()

        def waiting(holder: str) -> None:
            log.info("work directory %s is in use by %s; waiting", work, holder)

        return directory_lock(work / ".lock", on_wait=waiting)

    @staticmethod
    def _remove_work(work: Path | None) -> None:
        if work is not None and work.exists():
            shutil.rmtree(work)
            log.info("removed work directory %s: its artifact is published", work)

    # -- stages --

    def rollout(
        self,
        iteration: int,
        values: list[Artifact],
        progress: Progress | None = None,
        only_existing: bool = False,
    ) -> Artifact:
        """Candidates from pi_{k-1}: plain samples for k = 1, the guided search after."""
        c = self.cfg
        kind = "sample_rollout" if iteration == 1 else "guided_rollout"
        config = {**config_slice(c, kind, value_models=len(values)), "iteration": iteration}

        def build(out: Path) -> dict[str, Any]:
            train = load_prompts(c.data, c.data.train_split)
            prompts = iteration_slice(train, iteration, c.data.prompts_per_iteration, c.seed)
            seed = c.seed * 1000 + iteration
            value_dirs = [v.file(VALUE_DIR) for v in values]
            settings = rollout_settings(c, iteration)
            table = generate(c, prompts, settings, value_dirs, seed, progress, guided=iteration > 1)
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
            scored = score_rows(self.cfg, rollout.table())
            scored.to_parquet(out / TABLE)
            return {"reward_mean": float(scored["reward"].mean()), "rows": len(scored)}

        return self._stage(
            "score", config_slice(self.cfg, "score"), [rollout], build, only_existing
        )

    def reweight(self, scored: Artifact, only_existing: bool = False) -> Artifact:
        r = self.cfg.reweight

        def build(out: Path) -> dict[str, Any]:
            table, metrics = reweight(
                scored.table(), r.scheme, r.beta, r.resample_size, seed=self.cfg.seed
            )
            table.to_parquet(out / TABLE)
            return metrics

        config = config_slice(self.cfg, "reweight")
        return self._stage("reweight", config, [scored], build, only_existing)

    def train_value(
        self, reweighted: Artifact, previous: Artifact | None, only_existing: bool = False
    ) -> Artifact:
        """V_k; its trainer checkpoints into the store's work directory for this artifact, so a
        killed training resumes from its last checkpoint instead of starting over."""
        v = self.cfg.value
        init = previous if (previous is not None and v.init_from_previous) else None
        config = config_slice(self.cfg, "value")
        parents = [reweighted] + ([init] if init else [])
        work = self.work_dir("value", config, parents)

        def build(out: Path) -> dict[str, Any]:
            init_dir = init.file(VALUE_DIR) if init else None
            return train_value(self.cfg, reweighted.table(), init_dir, out / VALUE_DIR, work)

        return self._stage("value", config, parents, build, only_existing, work)

    def iteration(
        self, iteration: int, values: list[Artifact], progress: Progress | None = None
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

    def train_residual(self, only_existing: bool = False) -> Artifact:
        """IVL's residual value network, learned from the training split's demonstrations."""

        def build(out: Path) -> dict[str, Any]:
            return ivl.train(self.cfg, out / ivl.RESIDUAL_DIR)

        return self._stage("ivl", config_slice(self.cfg, "ivl"), [], build, only_existing)

    def evaluate(
        self, method: str, values: list[Artifact], progress: Progress | None = None
    ) -> Artifact:
        """Held-out outputs of a method (methods.METHODS) and their reward and win rate against
        the reference; methods that use value models are given V_1..V_k in `values`, ivl its
        residual."""
        c = self.cfg
        spec = get_method(method)
        if (spec.uses_values or spec.uses_residual) and not values:
            raise ValueError(f"evaluating {method!r} needs its value models (or residual)")
        config = {**config_slice(c, f"eval-{method}", value_models=len(values)), "method": method}

        def build(out: Path) -> dict[str, Any]:
            prompts = eval_slice(load_prompts(c.data, c.data.eval_split), c.data.eval_prompts)
            if prompts["reference"].isna().any():
                raise ValueError(
                    "evaluation needs a reference for every prompt (data.reference_field)"
                )
            reward = build_run_reward(c)
            guides = [v.file(ivl.RESIDUAL_DIR if spec.uses_residual else VALUE_DIR) for v in values]
            outputs = decode_scored(c, prompts, method, guides, c.seed + 7919, progress)
            reference_rewards = reward.score(
                prompts["prompt"].tolist(), prompts["reference"].tolist()
            )
            by_id = dict(zip(prompts["id"], reference_rewards, strict=True))
            outputs["reference_reward"] = outputs["prompt_id"].map(by_id)
            outputs.to_parquet(out / TABLE)
            return {
                **evaluation_metrics(outputs),
                "reference_mean_reward": float(reference_rewards.mean()),
                "samples_per_prompt": samples_per_prompt(c, method),
            }

        return self._stage("eval", config, list(values), build, only_existing=False)
