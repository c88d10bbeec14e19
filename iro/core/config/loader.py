"""Reading a config: YAML text, command-line overrides (`--set a.b=c`) and the file itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from iro.core.config.errors import ConfigError
from iro.core.config.run import RunConfig
from iro.core.config.validation import parse_config


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key written twice in one mapping is an error (PyYAML keeps the
    last silently, so a second `search:` block would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _DuplicateKeyError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} appears a second time in "
                    f"its mapping (first on line {seen[key]}); keep one of them"
                )
            if isinstance(key, str | int | float | bool):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line L, column C: what is wrong', from a PyYAML error."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML, naming the source and the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only
    except _DuplicateKeyError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{source} is not valid YAML: {_yaml_problem(err)}; fix the syntax there (check the "
            "indentation, and quote values that contain ': ' or start with a special character)"
        ) from None


def set_dotted_key(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    *parents, leaf = dotted_key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted_key}: {part} is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (so 3 is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    return key.strip(), read_yaml(raw, f"override {text!r}: the value")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config; `overrides` maps dotted keys (``search.beams``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    data = read_yaml(text, f"config {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} must be a mapping at the top level (key: value lines), "
            f"got {type(data).__name__}"
        )
    for key, value in (overrides or {}).items():
        set_dotted_key(data, key, value)
    return parse_config(data, str(path))
