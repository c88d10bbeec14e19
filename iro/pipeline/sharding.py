"""Generation and reward scoring sharded across Ray actors, merging into exactly the table one
process makes.

Each actor owns one engine and runs `generate_shard` for a contiguous range of the prompts; the
ranges' tables, concatenated in order, are the single-process table. That holds because every
request's seed comes from the prompt's index in the whole table, and because shard boundaries
fall on multiples of policy.prompts_per_call: each actor then makes exactly the engine and
value-model calls the single process makes for its prompts (the transformers engine seeds a whole
batch from its first request, so equal seeds alone would not be enough). Scoring shards a table's
rows the same way, on multiples of reward.batch_size, the rows the reward reads per call.

Plain actors rather than Ray Data (which hangs when actors hold every CPU, ray#44687) or
prefect-ray (whose workers need the Prefect API). Actors outlive one call, as the in-process
engine cache does: starting an engine (vLLM) costs tens of seconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from typing import Any

import pandas as pd

from iro.core.config import ConfigError, RayConfig, RunConfig
from iro.pipeline.generation import (
    GenerationJob,
    Progress,
    generate_shard,
    policy_tokenizer,
    render,
)
from iro.pipeline.scoring import build_run_reward, score_table

log = logging.getLogger(__name__)

# Ray's unix sockets live under its temp dir, and their paths must stay under 107 characters.
TEMP_DIR = "/tmp/iro-ray"
OBJECT_STORE_BYTES = 100 * 1024**2  # tables and prompt slices are small
CONNECT_TIMEOUT_S = 5.0
LOCAL = (None, "local")

# This process's actors and what they were created with: (Ray job, address, cpus, gpus).
_pool: dict[str, Any] = {"key": None, "actors": []}


def shard_bounds(n_prompts: int, workers: int, per_call: int | None) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges, at most `workers` and none empty, whose boundaries are
    multiples of `per_call` (all prompts, one range, when it is None): each shard's groups of
    prompts are then the single process's groups."""
    unit = per_call or max(n_prompts, 1)
    groups = math.ceil(n_prompts / unit)
    base, extra = divmod(groups, workers)
    bounds, start = [], 0
    for w in range(min(workers, groups)):
        stop = min(n_prompts, start + (base + (w < extra)) * unit)
        bounds.append((start, stop))
        start = stop
    return bounds


class ShardWorker:
    """A Ray actor: generates shards in its own process, reusing its engine from call to call."""

    def __init__(self, cwd: str) -> None:
        if os.path.isdir(cwd):  # relative paths of a config mean what they mean to the driver
            os.chdir(cwd)
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    def generate(
        self, config: dict[str, Any], prompts: pd.DataFrame, first_index: int, job: GenerationJob
    ) -> pd.DataFrame:
        cfg = RunConfig.model_validate(config)
        return generate_shard(cfg, prompts, job, first_index=first_index)

    def score(self, config: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
        cfg = RunConfig.model_validate(config)
        return score_table(build_run_reward(cfg), table, cfg.reward.batch_size)


class RayExecutor:
    """The pipeline's executor when ray.workers > 1 (see iro/pipeline/execution.py)."""

    def generate(
        self, cfg: RunConfig, prompts: pd.DataFrame, job: GenerationJob, progress: Progress | None
    ) -> pd.DataFrame:
        return generate_sharded(cfg, prompts, job, progress)

    def score(self, cfg: RunConfig, table: pd.DataFrame) -> pd.DataFrame:
        return score_sharded(cfg, table)


def generate_sharded(
    cfg: RunConfig, prompts: pd.DataFrame, job: GenerationJob, progress: Progress | None = None
) -> pd.DataFrame:
    """`generate_shard` on cfg.ray.workers Ray actors, one contiguous shard of prompts each."""
    render(cfg, policy_tokenizer(cfg), prompts, job.settings)  # fails before Ray starts
    bounds = shard_bounds(len(prompts), cfg.ray.workers, cfg.policy.prompts_per_call)
    if len(bounds) < cfg.ray.workers:
        log.info(
            "%d prompts make %d groups of policy.prompts_per_call (%s): %d of %d Ray workers "
            "get work (a smaller prompts_per_call spreads them wider; ids do not change)",
            len(prompts), math.ceil(len(prompts) / (cfg.policy.prompts_per_call or len(prompts))),
            cfg.policy.prompts_per_call, len(bounds), cfg.ray.workers,
        )  # fmt: skip
    started = time.time()
    shards = [(prompts.iloc[start:stop], start, job) for start, stop in bounds]
    tables = _run_shards(cfg, "generate", shards, progress)
    log.info(
        "generated %d candidates for %d prompts on %d Ray workers in %.1f s",
        sum(len(t) for t in tables), len(prompts), len(bounds), time.time() - started,
    )  # fmt: skip
    # copy: arrays that come out of Ray's object store are read-only
    return pd.concat(tables, ignore_index=True).copy()


def score_sharded(cfg: RunConfig, table: pd.DataFrame) -> pd.DataFrame:
    """`score_table` with the run's reward on cfg.ray.workers Ray actors, one contiguous shard of
    rows each, breaking on multiples of reward.batch_size."""
    started = time.time()
    bounds = shard_bounds(len(table), cfg.ray.workers, cfg.reward.batch_size)
    tables = _run_shards(cfg, "score", [(table.iloc[start:stop],) for start, stop in bounds])
    log.info(
        "scored %d rows on %d Ray workers in %.1f s", len(table), len(bounds), time.time() - started
    )
    return pd.concat(tables).copy()  # the table's own index, as score_table keeps it


def _run_shards(
    cfg: RunConfig, method: str, shards: list[tuple], progress: Progress | None = None
) -> list[pd.DataFrame]:
    """`ShardWorker.<method>(config, *shard)` for each shard on its own actor; the tables in
    shard order."""
    connect(cfg.ray)
    try:
        actors = _actors(cfg.ray, len(shards))
        config = cfg.model_dump(mode="json")
        refs = [
            getattr(actor, method).remote(config, *shard)
            for actor, shard in zip(actors, shards, strict=True)
        ]
        return _gather(refs, method, progress)
    except BaseException:
        _discard()  # a failed or interrupted actor may be mid-call: the next call starts afresh
        raise


def _gather(refs: list, method: str, progress: Progress | None) -> list[pd.DataFrame]:
    """The shards' tables in shard order; an actor's error is raised as soon as it arrives."""
    import ray

    tables: dict[Any, pd.DataFrame] = {}
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        tables[done[0]] = ray.get(done[0])
        if progress:
            progress(
                f"{len(tables)} of {len(refs)} Ray shards done ({method})", len(tables) / len(refs)
            )
    return [tables[ref] for ref in refs]


def connect(ray_cfg: RayConfig) -> None:
    """Join the cluster at ray.address, or start a local one sized for the workers."""
    import ray

    address = ray_cfg.address
    if address not in LOCAL:
        _check_reachable(address)
    if ray.is_initialized():
        return
    _discard()  # actors of an earlier cluster are gone with it
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address in LOCAL:
        ray.init(
            address="local",  # None would join a cluster that `ray start` left on this machine
            num_cpus=math.ceil(ray_cfg.workers * ray_cfg.cpus_per_worker),
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _temp_dir=TEMP_DIR,
            log_to_driver=True,
        )
        return
    try:
        ray.init(address=address, log_to_driver=True)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as err:
        raise ConfigError(
            f"ray.address {address!r}: cannot join a Ray cluster there ({err}); start one with "
            "`ray start --head`, or set ray.address to null to start a local one"
        ) from err


def _check_reachable(address: str) -> None:
    """Fail in seconds where no cluster listens: ray.init would wait there for minutes."""
    if address == "auto":
        return  # Ray looks for a cluster on this machine and says at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ConfigError(
            f"ray.address {address!r}: write host:port (the head's GCS port, 6379 by default), "
            "ray://host:10001, auto, or null to start a local cluster"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError(
            f"ray.address {address!r}: nothing answers there ({err}); start a cluster with "
            "`ray start --head`, or set ray.address to null to start a local one"
        ) from None


def _actors(ray_cfg: RayConfig, n: int) -> list:
    """`n` actors, reusing this process's (and their engines) when their resources match."""
    import ray

    job = ray.get_runtime_context().get_job_id()  # a new job: the old actors are gone
    key = (job, ray_cfg.address, ray_cfg.cpus_per_worker, ray_cfg.gpus_per_worker)
    if _pool["key"] != key:
        _discard()
        _pool["key"] = key
    actors = _pool["actors"]
    if len(actors) < n:
        _check_resources(ray_cfg, n)
        worker = ray.remote(ShardWorker).options(
            num_cpus=ray_cfg.cpus_per_worker, num_gpus=ray_cfg.gpus_per_worker
        )
        actors += [worker.remote(os.getcwd()) for _ in range(n - len(actors))]
    return actors[:n]


def _check_resources(ray_cfg: RayConfig, n: int) -> None:
    """Actors the cluster cannot place would wait forever: refuse them with the settings to
    change instead."""
    import ray

    have = ray.cluster_resources()
    for name, per_worker, setting in (
        ("CPU", ray_cfg.cpus_per_worker, "ray.cpus_per_worker"),
        ("GPU", ray_cfg.gpus_per_worker, "ray.gpus_per_worker"),
    ):
        need, total = n * per_worker, have.get(name, 0.0)
        if need > total + 1e-9:
            raise ConfigError(
                f"{n} Ray workers need {need:g} {name}s ({setting} = {per_worker:g} each) but the "
                f"Ray cluster has {total:g}; lower ray.workers or {setting}, or add nodes"
            )


def _discard() -> None:
    """Kill this process's actors (their engines with them)."""
    import ray

    actors, _pool["actors"], _pool["key"] = _pool["actors"], [], None
    if ray.is_initialized():
        for actor in actors:
            with contextlib.suppress(Exception):  # gone already, with an earlier cluster
                ray.kill(actor)


def shutdown() -> None:
    """Stop this process's actors and leave the cluster (a local one stops with it)."""
    import ray

    _discard()
    ray.shutdown()
