from pathlib import Path

import pytest

from iro.base.config import ConfigError, load_config, parse_override


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_demo_config_is_valid():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    assert cfg.iterations >= 2
    assert cfg.search.samples_per_prompt == cfg.search.beams * cfg.search.children


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"search\.beam: unknown key"):
        load_config(write(tmp_path, "search:\n  beam: 4\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"sampling\.temperature"):
        load_config(write(tmp_path, "sampling:\n  temperature: hot\n"))


def test_search_budget_is_enforced(tmp_path):
    with pytest.raises(ConfigError, match="exceeds max_candidates"):
        load_config(write(tmp_path, "search: {beams: 20, children: 20, max_candidates: 64}\n"))


def test_chunk_tokens_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r"search\.chunk_tokens"):
        load_config(write(tmp_path, "search: {chunk_tokens: 0}\n"))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("does/not/exist.yaml")


def test_overrides_apply_dotted_keys(tmp_path):
    key, value = parse_override("search.beams=3")
    cfg = load_config(write(tmp_path, "run_name: x\n"), {key: value})
    assert cfg.search.beams == 3


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("search.beams")
