import json

import pandas as pd
import pytest

from iro.base.store import ArtifactError, ArtifactStore


def build_table(out):
    pd.DataFrame({"x": [1, 2]}).to_parquet(out / "table.parquet")
    return {"rows": 2}


def test_same_inputs_same_id_and_reuse(tmp_path):
    store = ArtifactStore(tmp_path)
    first = store.create("score", 1, {"a": 1}, [], build_table)
    calls = []

    def must_not_run(out):
        calls.append(out)
        return {}

    second = store.create("score", 1, {"a": 1}, [], must_not_run)
    assert second.id == first.id and not calls
    assert second.table()["x"].tolist() == [1, 2]


def test_changed_config_or_parent_gives_new_version_beside_old(tmp_path):
    store = ArtifactStore(tmp_path)
    base = store.create("score", 1, {"a": 1}, [], build_table)
    other = store.create("score", 1, {"a": 2}, [], build_table)
    child_a = store.create("reweight", 1, {}, [base], build_table)
    child_b = store.create("reweight", 1, {}, [other], build_table)
    bumped = store.create("score", 2, {"a": 1}, [], build_table)
    assert len({base.id, other.id, bumped.id}) == 3 and child_a.id != child_b.id
    assert base.path.exists() and other.path.exists()


def test_manifest_records_lineage_and_checksums(tmp_path):
    store = ArtifactStore(tmp_path)
    parent = store.create("rollout", 1, {"n": 1}, [], build_table)
    child = store.create("score", 1, {"r": "x"}, [parent], build_table, run_name="demo")
    manifest = json.loads((child.path / "manifest.json").read_text())
    assert manifest["parents"] == [{"stage": "rollout", "id": parent.id}]
    assert manifest["config"] == {"r": "x"} and manifest["metrics"] == {"rows": 2}
    assert set(manifest["files"]) == {"table.parquet"} and manifest["created_by_run"] == "demo"


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)

    def explode(out):
        (out / "partial.bin").write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        store.create("rollout", 1, {}, [], explode)
    assert list((tmp_path / "rollout").iterdir()) == []
    assert store.find("rollout", store.artifact_id("rollout", 1, {}, [])) is None


def test_corrupted_file_is_detected(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = store.create("score", 1, {}, [], build_table)
    (artifact.path / "table.parquet").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        store.find("score", artifact.id)


def test_unset_optional_settings_do_not_change_ids(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.artifact_id("s", 1, {"a": 1}, []) == store.artifact_id(
        "s", 1, {"a": 1, "new": None}, []
    )
    assert store.artifact_id("s", 1, {"a": 1}, []) != store.artifact_id(
        "s", 1, {"a": 1, "new": 0}, []
    )


def test_engine_memory_knobs_do_not_change_what_a_stage_is():
    from iro.base.config import RunConfig
    from iro.pipeline.runner import Pipeline

    small = Pipeline(RunConfig(policy={"cpu_kv_cache_gib": 1, "engine": "vllm"}))
    large = Pipeline(RunConfig(policy={"cpu_kv_cache_gib": 4, "engine": "hf"}))
    assert small._generation_slice() == large._generation_slice()
    other_model = Pipeline(RunConfig(policy={"model": "org/other"}))
    assert other_model._generation_slice() != small._generation_slice()
