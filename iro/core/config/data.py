"""The prompt dataset and how a prompt is shown to the policy."""

from __future__ import annotations

from pydantic import Field

from iro.core.config.base import Section


class DataConfig(Section):
    """Where prompts come from and how they are shown to the policy."""

    dataset: str = Field("data/docstrings.jsonl", description="local JSONL/Parquet/CSV or hub id")
    train_split: str = Field(
        "train",
        description="split the iterations' training prompts (and IVL's demonstrations) come "
        "from: a value of data.split_field in a single-file dataset, else a split name that "
        "datasets.load_dataset knows",
    )
    eval_split: str = Field(
        "test",
        description="split of the held-out prompts evaluation reads, named as data.train_split is",
    )
    split_field: str | None = Field(
        "split", description="column holding the split name in a single-file dataset"
    )
    prompt_field: str = Field(
        "document",
        description="column holding each prompt: put into data.prompt_template for the policy, "
        "and read as it is by the reward",
    )
    reference_field: str | None = Field(
        "summary",
        description="column holding each prompt's reference response: the `reference` baseline "
        "of reports, scored by the reward at evaluation, and IVL's demonstrations (unless "
        "ivl.response_field). null: none, and then evaluation cannot run",
    )
    id_field: str | None = Field(
        "id",
        description="column holding a unique id per prompt, which pairs each method's output "
        "with the baseline's in reports; null: the row's position in its split",
    )
    prompt_template: str = Field(
        "Summarize the following documentation in one short sentence.\n\n{prompt}",
        description="what the policy is asked, {prompt} replaced by the prompt (Python "
        "str.format: write any other brace doubled)",
    )
    use_chat_template: bool = Field(
        True,
        description="show the templated prompt as a user message through the policy's chat "
        "template; false: the policy reads the text as it is (for a base model without one)",
    )
    prompts_per_iteration: int = Field(
        32,
        ge=1,
        description="training prompts per iteration, each iteration a fresh slice of the "
        "shuffled train split (iterations x this many must fit in it)",
    )
    eval_prompts: int = Field(
        24, ge=1, description="held-out prompts evaluated: the first N of the eval split"
    )
