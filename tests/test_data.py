import json

import pandas as pd
import pytest

from iro.core.config import DataConfig
from iro.core.data import DatasetError, eval_slice, iteration_slice, load_prompts, render_prompts


def test_demo_dataset_is_frozen_in_the_repo():
    cfg = DataConfig()
    train, test = load_prompts(cfg, "train"), load_prompts(cfg, "test")
    assert len(train) >= 200 and len(test) >= 32
    assert not set(train["id"]) & set(test["id"])
    assert (
        train["reference"].str.len().min() > 0 and train["prompt"].str.split().str.len().min() >= 35
    )


def test_iteration_slices_are_fresh_and_disjoint():
    prompts = pd.DataFrame(
        {"id": [str(i) for i in range(30)], "prompt": ["p"] * 30, "reference": ["r"] * 30}
    )
    slices = [set(iteration_slice(prompts, k, 10, seed=0)["id"]) for k in (1, 2, 3)]
    assert all(len(s) == 10 for s in slices)
    assert (
        not (slices[0] & slices[1]) and not (slices[1] & slices[2]) and not (slices[0] & slices[2])
    )
    assert set(iteration_slice(prompts, 1, 10, seed=0)["id"]) == slices[0]  # deterministic
    with pytest.raises(DatasetError, match=r"iteration 4 needs training prompts 30\.\.39"):
        iteration_slice(prompts, 4, 10, seed=0)
    with pytest.raises(DatasetError, match="eval split has 30 rows"):
        eval_slice(prompts, 31)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_jsonl_and_parquet_and_missing_columns(tmp_path):
    rows = [
        {"text": f"doc {i}", "tldr": f"sum {i}", "split": "train" if i % 2 else "test"}
        for i in range(6)
    ]
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(dataset=str(jsonl), prompt_field="text", reference_field="tldr", id_field=None)
    assert load_prompts(cfg, "train")["prompt"].tolist() == ["doc 1", "doc 3", "doc 5"]
    parquet = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    assert len(load_prompts(cfg.model_copy(update={"dataset": str(parquet)}), "test")) == 3
    with pytest.raises(DatasetError, match="no column 'body'"):
        load_prompts(cfg.model_copy(update={"prompt_field": "body"}), "train")
    with pytest.raises(DatasetError, match="has no rows"):
        load_prompts(cfg, "validation")
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_prompts(cfg.model_copy(update={"dataset": str(tmp_path / "nope.jsonl")}), "train")


def test_render_without_chat_template_and_missing_template(tiny_tokenizer):
    cfg = DataConfig(prompt_template="Summarize: {prompt}", use_chat_template=False)
    assert render_prompts(tiny_tokenizer, cfg, ["x"]) == ["Summarize: x"]
    with pytest.raises(DatasetError, match="no chat template"):
        render_prompts(tiny_tokenizer, cfg.model_copy(update={"use_chat_template": True}), ["x"])


def test_gzipped_jsonl_loads_like_plain_jsonl(tmp_path):
    import gzip

    rows = [
        {"id": str(i), "document": f"doc {i}", "summary": "s", "split": "test"} for i in range(3)
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "d.jsonl").write_text(text)
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    plain = load_prompts(DataConfig(dataset=str(tmp_path / "d.jsonl")), "test")
    packed = load_prompts(DataConfig(dataset=str(tmp_path / "d.jsonl.gz")), "test")
    pd.testing.assert_frame_equal(plain, packed)
    with pytest.raises(DatasetError, match="not found"):
        load_prompts(DataConfig(dataset=str(tmp_path / "missing.jsonl.gz")), "test")
