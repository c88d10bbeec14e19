"""The prompt dataset and how a prompt is shown to the policy."""

from __future__ import annotations

from pydantic import Field

from iro.core.config.base import Section


class DataConfig(Section):
    """Where prompts come from and how they are shown to the policy."""

    dataset: str = Field("data/docstrings.jsonl", description="local JSONL/Parquet/CSV or hub id")
    train_split: str = "train"
    eval_split: str = "test"
    split_field: str | None = Field(
        "split", description="column holding the split name in a single-file dataset"
    )
    prompt_field: str = "document"
    reference_field: str | None = "summary"
    id_field: str | None = "id"
    prompt_template: str = (
        "Summarize the following documentation in one short sentence.\n\n{prompt}"
    )
    use_chat_template: bool = True
    prompts_per_iteration: int = Field(32, ge=1)
    eval_prompts: int = Field(24, ge=1)
