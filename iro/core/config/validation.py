"""Checking plain data against the schema, with messages that name the key and how to fix it."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from iro.core.config.errors import ConfigError
from iro.core.config.run import RunConfig

# keys whose value is never echoed in a message: what was written there may be a key itself
SECRET_HINTS = ("key", "secret", "password", "token_env")


def _section_at(loc: tuple) -> type[BaseModel] | None:
    """The schema section that holds the key at `loc` (list indexes skipped), if any."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        candidates += [a for c in list(candidates) for a in get_args(c)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _suggestion(loc: tuple) -> str:
    """'; did you mean beams? (known: beams, children, ...)' for a misspelt key."""
    import difflib

    section = _section_at(loc)
    if section is None:
        return ""
    known = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ";"
    return f"{hint} (known here: {', '.join(known)})"


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        leaf = str(item["loc"][-1]) if item["loc"] else ""
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggestion(item['loc'])}")
        elif any(hint in leaf for hint in SECRET_HINTS):
            # never echo what was written where a key's name goes: it may be the key itself
            lines.append(
                f"  {key}: {message} (value not shown); give the name of the environment "
                "variable (or Prefect Secret) that holds the key, not the key itself"
            )
        elif item["type"] == "string_pattern_mismatch" and key == "run_name":
            lines.append(
                f"  {key}: {item.get('input')!r} is not a valid run name: use lowercase letters, "
                "digits and dashes (it names a directory of the store)"
            )
        else:
            lines.append(f"  {key}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
