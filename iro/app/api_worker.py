"""The one thread that decodes for `iro api`, batching the requests queued while it is busy.

HTTP handlers submit jobs and await their futures; this thread owns the engine and the value
models. It takes the oldest job and every queued job that may share its decode call, and answers
them all from one `decode` call (the search batches its prompts).

Who may share: a decode call draws each prompt's samples from the call's seed and the prompt's
place in the call (and the transformers engine from its batch-mates too), so a job whose seed
pins a sampled answer is decoded in a call of its own, as `decode` would answer it alone.
Greedy jobs, whose answers no seed changes, and jobs without a seed share calls when their
settings agree. Batching thus never changes an answer that a seed fixes.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from iro.core.config import RunConfig
from iro.core.methods import get_method
from iro.pipeline.decoder import decode
from iro.pipeline.methods import samples_per_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSettings:
    """Everything a decode call reads but its prompts and seed."""

    cfg: RunConfig
    method: str
    value_dirs: tuple[Path, ...]
    betas: tuple[float, ...] | None

    @cached_property
    def key(self) -> str:
        """Equal for settings that decode alike: jobs with equal keys may share a call."""
        dirs = [str(d) for d in self.value_dirs]
        return json.dumps([self.cfg.model_dump(mode="json"), self.method, dirs, self.betas])

    @property
    def greedy(self) -> bool:
        """No seed changes the answer: the search samples at temperature 0, or a token-level
        method takes the argmax."""
        if get_method(self.method).runs_on == "search":
            return self.cfg.sampling.temperature == 0
        return self.cfg.decode.greedy


@dataclass(frozen=True)
class Response:
    text: str
    tokens: int  # in the policy's tokens
    ended: bool  # the policy ended it (end of sequence, a stop string), not the length limit


@dataclass(frozen=True)
class Answer:
    responses: list[Response]  # one per row of the job, in its order
    seconds: float  # the job's share of its decode call's wall time, by rows
    candidates: int  # responses the policy sampled for it


@dataclass
class Job:
    settings: DecodeSettings
    prompts: list[str]  # one row per response wanted: a prompt repeated n times
    seed: int | None  # None: any seed will do
    future: Future[Answer] = field(default_factory=Future)

    @property
    def shares_calls(self) -> bool:
        return self.seed is None or self.settings.greedy


def decode_jobs(jobs: Sequence[Job]) -> list[Answer]:
    """Answer jobs of equal settings from one decode call; the first job's seed (or a fresh one)
    seeds it."""
    settings = jobs[0].settings
    prompts = [prompt for job in jobs for prompt in job.prompts]
    ids = [str(i) for i in range(len(prompts))]
    frame = pd.DataFrame({"id": ids, "prompt": prompts, "reference": None})
    seed = jobs[0].seed if jobs[0].seed is not None else secrets.randbelow(2**31)
    started = time.perf_counter()
    outputs = decode(
        settings.cfg, frame, settings.method, list(settings.value_dirs), seed,
        betas=None if settings.betas is None else list(settings.betas),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    log.info(
        "decoded %d prompts of %d requests in one %s call in %.2f s",
        len(prompts), len(jobs), settings.method, seconds,
    )  # fmt: skip
    rows = outputs.set_index("prompt_id").loc[ids]
    responses = [Response(r.response, int(r.num_tokens), bool(r.ended)) for r in rows.itertuples()]
    sampled = samples_per_prompt(settings.cfg, settings.method)
    answers, start = [], 0
    for job in jobs:
        count = len(job.prompts)
        share = seconds * count / len(prompts)
        answers.append(Answer(responses[start : start + count], share, sampled * count))
        start += count
    return answers


class DecodeWorker:
    """The decode thread and its queue. `submit` from any thread; `close` drains the queue."""

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="iro-api-decode", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future[Answer]:
        with self._changed:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._jobs.append(job)
            self._changed.notify()
        return job.future

    def close(self) -> None:
        """Finish the call under way and cancel what is still queued."""
        with self._changed:
            self._closed = True
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()
            self._changed.notify()
        self._thread.join()

    def _next_batch(self) -> list[Job] | None:
        """The oldest job and the queued jobs that may share its call, less those whose
        requests were cancelled meanwhile; None once closed."""
        with self._changed:
            while True:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return None
                first = self._jobs.popleft()
                key = first.settings.key
                batch = [first]
                if first.shares_calls:
                    batch += [j for j in self._jobs if j.shares_calls and j.settings.key == key]
                    for job in batch[1:]:
                        self._jobs.remove(job)
                batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if batch:
                    return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                answers = decode_jobs(batch)
            except Exception as err:
                log.exception("a decode call for %d requests failed", len(batch))
                for job in batch:
                    job.future.set_exception(err)
            else:
                for job, answer in zip(batch, answers, strict=True):
                    job.future.set_result(answer)
