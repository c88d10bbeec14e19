"""What every section shares: the strict base model and the rules for numbers, flags and the
names of key-holding variables."""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# `*_env` settings name the variable that holds a key, never the key: a key written there by
# mistake is refused (below), and a refused value is never echoed (validation.SECRET_HINTS)
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# how API keys start (OpenAI, Anthropic, Hugging Face, GitHub, Groq, xAI, Google); a variable's
# name starting so would be a strange choice
KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "github_pat_", "gsk_", "xai-", "AIza")


def _a_name_not_a_key(value: str | None) -> str | None:
    """For `*_api_key_env`: refuse a value shaped like a key rather than a variable's name."""
    if value is not None and (
        value.startswith(KEY_PREFIXES) or (len(value) >= 32 and "_" not in value)
    ):
        raise ValueError("this looks like an API key itself")
    return value


EnvVarName = Annotated[str, Field(pattern=ENV_VAR_PATTERN), AfterValidator(_a_name_not_a_key)]


def _accepts(annotation: Any, kind: type) -> bool:
    """Whether a field's type admits `kind` (int, float or bool), through unions and Annotated."""
    if annotation is kind:
        return True
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        return any(_accepts(arg, kind) for arg in get_args(annotation))
    return False


class Section(BaseModel):
    # NaN or infinity in a setting (`beta: .nan`) would poison every number computed from it
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _flags_and_numbers_do_not_mix(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic would read `iterations: true` as 1 and `trust_remote_code: "yes"` as true:
        a flag must be written true/false, a number as a number."""
        annotation = cls.model_fields[info.field_name].annotation
        is_flag = _accepts(annotation, bool)
        if (
            isinstance(value, bool)
            and not is_flag
            and (_accepts(annotation, int) or _accepts(annotation, float))
        ):
            raise ValueError(f"expected a number, got the flag {str(value).lower()}")
        if is_flag and annotation is bool and not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
