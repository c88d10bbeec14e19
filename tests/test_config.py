from pathlib import Path

import pytest
import yaml

from iro.core.config import EMBEDDED_MODEL, ConfigError, load_config, parse_config, parse_override
from iro.core.precision import resolve_dtype


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


CONFIGS = Path(__file__).parents[1] / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def assert_resolved(written, resolved, where: str) -> None:
    """Every value the YAML writes is the value the loaded config holds, key by key."""
    if isinstance(written, dict):
        assert isinstance(resolved, dict), where
        for key, value in written.items():
            assert key in resolved, f"{where}.{key}: written but not in the resolved config"
            assert_resolved(value, resolved[key], f"{where}.{key}")
    elif isinstance(written, list):
        assert isinstance(resolved, list) and len(resolved) == len(written), where
        for i, (w, r) in enumerate(zip(written, resolved, strict=True)):
            assert_resolved(w, r, f"{where}[{i}]")
    elif written == "auto" and where.endswith(("dtype", "bf16")):  # this machine's precision
        native = resolve_dtype("auto")
        assert resolved == (native == "bfloat16" if where.endswith("bf16") else native), where
    else:
        # equal values (an int may widen to a float); a flag stays a flag, never a number
        assert resolved == written, (where, written, resolved)
        assert isinstance(resolved, bool) == isinstance(written, bool), (where, written, resolved)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_shipped_configs_load_with_the_values_they_write(path):
    cfg = load_config(path)
    assert_resolved(yaml.safe_load(path.read_text()), cfg.model_dump(), path.stem)
    if path.stem.startswith("paper-"):  # the paper's settings: hub models and datasets
        return
    assert (CONFIGS.parent / cfg.data.dataset).is_file()  # relative to the checkout
    assert cfg.policy.model == EMBEDDED_MODEL


def test_the_shipped_configs_are_all_checked_here():
    assert {p.stem for p in CONFIG_FILES} >= {"demo", "endpoint", "sentiment"}


def test_demo_config_resolves_to_the_embedded_demo():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert (cfg.run_name, cfg.seed, cfg.iterations) == ("demo", 0, 2)
    native = resolve_dtype("auto")  # bfloat16 where this machine computes it natively
    assert (cfg.policy.engine, cfg.policy.dtype, cfg.policy.endpoint) == ("auto", native, None)
    assert cfg.data.dataset == "data/pydocs.jsonl.gz"
    assert (cfg.data.prompts_per_iteration, cfg.data.eval_prompts) == (128, 64)
    assert cfg.data.prompt_template.endswith("in one short sentence.\n\n{prompt}")
    assert [(c.type, c.weight, c.options) for c in cfg.reward.components] == [
        ("embedding_similarity", 1.0, {}),
        ("length_penalty", 1.0, {"target_words": 12, "per_word": 0.02}),
    ]
    sampling = cfg.sampling
    assert (sampling.temperature, sampling.top_k, sampling.max_new_tokens) == (0.7, 50, 48)
    assert cfg.rollout.samples == 4
    search = cfg.search
    assert (search.beams, search.children, search.chunk_tokens) == (2, 2, 4)
    assert search.budget_u == 4 and search.selection == "diversity_first"
    assert (cfg.reweight.scheme, cfg.reweight.beta) == ("weighted", 1.0)
    assert (cfg.value.num_layers, cfg.value.beta, cfg.value.target) == (4, 1.0, "reward")
    assert (cfg.value.prior, cfg.value.prior_stride) == ("reward", 4)
    training = cfg.value.training
    assert (training.num_train_epochs, training.per_device_train_batch_size) == (2, 16)
    # passed through to TrainingArguments, resolved as policy.dtype is
    assert training.model_dump()["bf16"] is (native == "bfloat16")
    assert training.learning_rate == pytest.approx(1e-4)
    assert cfg.eval.enabled and cfg.eval.baselines == ["base", "bon"]
    assert cfg.store.root == ".iro/store"
    # what the file leaves out takes the schema's defaults
    assert (cfg.data.train_split, cfg.data.eval_split, cfg.sampling.stop) == ("train", "test", None)
    assert cfg.search.max_candidates == 256 and cfg.search.implicit_reward is None
    assert cfg.report.pairwise_judge is None and not cfg.report.alpaca_eval


def test_endpoint_config_resolves_to_an_openai_policy_with_demo_defaults():
    cfg = load_config(CONFIGS / "endpoint.yaml")
    assert cfg.run_name == "endpoint-demo" and cfg.policy.engine == "openai"
    endpoint = cfg.policy.endpoint
    assert (endpoint.base_url, endpoint.model) == ("http://127.0.0.1:8000/v1", "smollm2")
    assert endpoint.api_key_env is None and endpoint.prompt_as_token_ids
    assert (endpoint.timeout_s, endpoint.max_retries, endpoint.concurrency) == (120.0, 4, 8)
    assert [c.type for c in cfg.reward.components] == ["embedding_similarity", "length_penalty"]
    assert (cfg.sampling.max_new_tokens, cfg.search.chunk_tokens, cfg.reweight.beta) == (
        48,
        8,
        0.05,
    )


def test_sentiment_config_resolves_to_a_vader_reward():
    cfg = load_config(CONFIGS / "sentiment.yaml")
    assert cfg.run_name == "sentiment" and "upbeat" in cfg.data.prompt_template
    assert [(c.type, c.weight) for c in cfg.reward.components] == [
        ("sentiment", 1.0),
        ("length_penalty", 1.0),
    ]
    report = cfg.report
    assert (report.baseline, report.reward_winrate, report.pairwise_judge) == ("base", True, None)


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


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"learnin_rate": 1e-4}, "not TrainingArguments fields"),
        ({"seed": 3}, "set by the pipeline"),
    ],
)
def test_a_bad_value_training_key_stops_before_any_stage(training, message):
    from iro.pipeline.runner import Pipeline

    with pytest.raises(ConfigError, match=message):
        Pipeline(parse_config({"value": {"training": training}}))


def test_a_beta_list_needs_a_beta_per_iteration():
    with pytest.raises(ConfigError, match="lists 1 betas for 2 iterations"):
        parse_config({"iterations": 2, "value": {"beta": [1.0]}})
    assert parse_config({"iterations": 2, "value": {"beta": [1.0, 2.0]}}).value.betas(2) == [
        1.0,
        2.0,
    ]


def test_a_method_run_is_named_after_the_config_and_takes_its_settings():
    from iro.pipeline.methods import VAS_RUN_SETTINGS, method_run_config

    vas = method_run_config("configs/demo.yaml", None, {"seed": 7}, "vas")
    assert vas.run_name == "demo-vas" and vas.seed == 7
    assert vas.decode.mode == VAS_RUN_SETTINGS["decode.mode"] and vas.iterations == 1
    assert method_run_config("configs/demo.yaml", "mine", None, "ivl").run_name == "mine"
    assert method_run_config("configs/demo.yaml", None, None, "run").run_name == "demo"
