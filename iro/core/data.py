"""Prompt datasets: loading, per-iteration slices and rendering for the policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iro.core.config import DataConfig

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")  # datasets reads these transparently


def local_format(path: Path) -> str | None:
    """The `datasets` builder for a local file (data.jsonl or data.jsonl.gz), None if not local."""
    suffixes = path.suffixes[-2:] if path.suffix in COMPRESSED else path.suffixes[-1:]
    return LOCAL_FORMATS.get(suffixes[0]) if suffixes else None


class DatasetError(ValueError):
    """A dataset that is missing, empty or lacks a configured column."""


def _load_split(cfg: DataConfig, split: str) -> pd.DataFrame:
    import datasets

    datasets.disable_progress_bars()  # a prompt file loads in a second: its bar is only noise
    path = Path(cfg.dataset).expanduser()
    builder = local_format(path)
    if builder is not None:
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {path}")
        if path.stat().st_size == 0:
            raise DatasetError(f"dataset file {path} is empty; point data.dataset at the prompts")
        try:
            frame = datasets.load_dataset(builder, data_files=str(path))["train"].to_pandas()
        except Exception as err:  # datasets raises anything from StopIteration to ArrowInvalid
            raise DatasetError(
                f"cannot read dataset file {path} as {builder} ({type(err).__name__}: {err}); "
                "check that it holds one record per line (JSONL) or a table"
            ) from err
        if cfg.split_field and cfg.split_field in frame.columns:
            present = sorted(map(str, frame[cfg.split_field].unique()))
            frame = frame[frame[cfg.split_field] == split]
            if frame.empty:
                raise DatasetError(
                    f"dataset {cfg.dataset!r} split {split!r} has no rows: its column "
                    f"{cfg.split_field!r} holds {present}; set data.train_split/data.eval_split "
                    "to one of them"
                )
        elif cfg.split_field:
            raise DatasetError(
                f"dataset {path} has no column {cfg.split_field!r} (data.split_field); columns: "
                f"{sorted(frame.columns)}. Set data.split_field: null to use the whole file."
            )
        return frame.reset_index(drop=True)
    try:
        return datasets.load_dataset(cfg.dataset, split=split).to_pandas()
    except Exception as err:
        raise DatasetError(f"cannot load dataset {cfg.dataset!r} split {split!r}: {err}") from err


def load_prompts(cfg: DataConfig, split: str) -> pd.DataFrame:
    """Columns: id, prompt, reference (None where the dataset has no reference)."""
    frame = _load_split(cfg, split)
    for field in (cfg.prompt_field, cfg.reference_field, cfg.id_field):
        if field and field not in frame.columns:
            raise DatasetError(
                f"dataset {cfg.dataset!r} has no column {field!r}; columns: {sorted(frame.columns)}"
            )
    if frame.empty:
        raise DatasetError(
            f"dataset {cfg.dataset!r} split {split!r} has no rows; point data.dataset at a "
            "dataset with prompts in that split"
        )
    return pd.DataFrame(
        {
            "id": frame[cfg.id_field].astype(str) if cfg.id_field else frame.index.astype(str),
            "prompt": frame[cfg.prompt_field].astype(str),
            "reference": frame[cfg.reference_field].astype(str) if cfg.reference_field else None,
        }
    )


def check_prompt_counts(cfg: DataConfig, iterations: int, evaluate: bool) -> dict[str, int]:
    """Load the splits a run reads and check they hold enough prompts, before any work starts.

    `iterations` iterations take disjoint slices of data.prompts_per_iteration training prompts
    and the evaluation takes data.eval_prompts held-out ones; without this check a too-small
    split stops the run only at the iteration that runs out, after the earlier ones have run.
    Returns the number of prompts in each split read.
    """
    train = load_prompts(cfg, cfg.train_split)
    need = iterations * cfg.prompts_per_iteration
    if need > len(train):
        raise DatasetError(
            f"{iterations} iteration(s) of data.prompts_per_iteration = "
            f"{cfg.prompts_per_iteration} need {need} training prompts but split "
            f"{cfg.train_split!r} of {cfg.dataset!r} has {len(train)}; lower "
            f"data.prompts_per_iteration to at most {len(train) // iterations} or run fewer "
            "iterations"
        )
    counts = {cfg.train_split: len(train)}
    if evaluate:
        held_out = load_prompts(cfg, cfg.eval_split)
        if cfg.eval_prompts > len(held_out):
            raise DatasetError(
                f"data.eval_prompts = {cfg.eval_prompts} but split {cfg.eval_split!r} of "
                f"{cfg.dataset!r} has {len(held_out)} prompts; lower data.eval_prompts to at "
                f"most {len(held_out)}"
            )
        counts[cfg.eval_split] = len(held_out)
    return counts


def iteration_slice(prompts: pd.DataFrame, iteration: int, size: int, seed: int) -> pd.DataFrame:
    """The fresh, disjoint slice of training prompts for `iteration` (1-based), as in the paper."""
    order = np.random.default_rng(seed).permutation(len(prompts))
    start, stop = (iteration - 1) * size, iteration * size
    if stop > len(prompts):
        raise DatasetError(
            f"iteration {iteration} needs training prompts {start}..{stop - 1} but the split has "
            f"only {len(prompts)}; lower data.prompts_per_iteration or the number of iterations"
        )
    return prompts.iloc[order[start:stop]].reset_index(drop=True)


def validation_slice(prompts: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """Training prompts for tuning: the end of the order whose front the iterations take.

    Disjoint from every iteration's slice as long as the iterations leave `size` prompts over,
    so settings can be tuned without looking at the held-out split.
    """
    order = np.random.default_rng(seed).permutation(len(prompts))
    if size > len(prompts):
        raise DatasetError(f"{size} validation prompts but the training split has {len(prompts)}")
    return prompts.iloc[order[len(prompts) - size :]].reset_index(drop=True)


def eval_slice(prompts: pd.DataFrame, size: int) -> pd.DataFrame:
    if size > len(prompts):
        raise DatasetError(f"data.eval_prompts = {size} but the eval split has {len(prompts)} rows")
    return prompts.iloc[:size].reset_index(drop=True)


def render_prompts(tokenizer, cfg: DataConfig, prompts: list[str]) -> list[str]:
    """The exact text the policy reads (chat template applied when the config asks for it)."""
    texts = [cfg.prompt_template.format(prompt=p) for p in prompts]
    if not cfg.use_chat_template:
        return texts
    if not tokenizer.chat_template:
        raise DatasetError("data.use_chat_template is true but the policy has no chat template")
    return [render_chat(tokenizer, [{"role": "user", "content": t}]) for t in texts]


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """A conversation as the policy reads it: its chat template, open for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
