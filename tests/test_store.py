import json

import pandas as pd
import pytest

from iro.core.store.local import ArtifactError, ArtifactStore


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


@pytest.fixture
def fresh_code_version():
    from iro.core.store.local import code_version

    code_version.cache_clear()
    yield
    code_version.cache_clear()


def test_manifest_records_the_commit_that_built_it(tmp_path, fresh_code_version):
    import subprocess
    from pathlib import Path

    import iro

    root = Path(iro.__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("the iro package is not in a git checkout here")
    artifact = ArtifactStore(tmp_path).create("score", 1, {"a": 1}, [], build_table)
    version = artifact.manifest["code_version"]
    assert version["git_commit"] == head.stdout.strip()
    assert isinstance(version["git_dirty"], bool) and version["package"]


def test_without_git_the_commit_is_null_and_the_id_unchanged(
    tmp_path, monkeypatch, fresh_code_version
):
    store = ArtifactStore(tmp_path)
    with_git = store.artifact_id("score", 1, {"a": 1}, [])
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    artifact = store.create("score", 1, {"a": 1}, [], build_table)
    assert artifact.manifest["code_version"]["git_commit"] is None
    assert artifact.manifest["code_version"]["git_dirty"] is None
    assert artifact.id == with_git


def test_atomic_writes_leave_ordinary_readable_files(tmp_path):
    from iro.core.fsutil import atomic_write_json

    atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
