"""The artifact store on an S3 URL, against a real S3-compatible server on loopback (moto).

Each test uses its own prefix of one bucket and its own cache directories, which stand for
separate machines: store A builds and publishes, store B (another cache, the same URL) finds.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from iro.core.config import StoreConfig
from iro.core.store.local import MANIFEST, ArtifactError, ArtifactStore
from iro.core.store.remote import BLOBS, RemoteArtifactStore, open_store

BUCKET = "iro-test"
# fake credentials, planted to prove that they never reach a message or a log
FAKE_SECRET = "fake-secret-do-not-print"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with one bucket, and fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", "/nonexistent")  # nothing of the user's own AWS setup
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        import s3fs

        s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True).mkdir(BUCKET)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture
def url(request: pytest.FixtureRequest) -> str:
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"


def machine(tmp_path: Path, name: str, url: str, endpoint: str) -> RemoteArtifactStore:
    """A store as one machine sees it: its own cache directory, the shared URL."""
    cfg = StoreConfig(root=url, cache=str(tmp_path / name), options={"endpoint_url": endpoint})
    store = open_store(cfg)
    assert isinstance(store, RemoteArtifactStore)
    return store


def tiny_build(text: str = "hello", calls: list[str] | None = None):
    """A build writing a few bytes and a small parquet table; records each call in `calls`."""

    def build(out: Path) -> dict[str, Any]:
        if calls is not None:
            calls.append(text)
        (out / "note.txt").write_text(text)
        (out / "sub").mkdir()
        pd.DataFrame({"x": [1, 2, 3], "t": ["a", "b", text]}).to_parquet(out / "sub/t.parquet")
        return {"n": 3}

    return build


def files_of(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def published_manifest(store: RemoteArtifactStore, stage: str, artifact_id: str) -> bytes:
    return store._fs.cat_file(store._manifest_key(stage, artifact_id))


def test_a_published_artifact_is_found_by_another_machine_without_rebuilding(
    tmp_path, url, endpoint
):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    made = a.create("score", 1, {"k": 1}, [], tiny_build())
    calls: list[str] = []
    found = b.create("score", 1, {"k": 1}, [], tiny_build("other", calls))
    assert calls == []  # B never built it
    assert (found.id, found.manifest) == (made.id, made.manifest)
    assert found.path.is_relative_to(b.root)  # a local path, for readers such as transformers
    assert files_of(found.path) == files_of(made.path)
    assert found.table("sub/t.parquet")["t"].tolist() == ["a", "b", "hello"]
    assert b.find("score", made.id) == found  # now a local hit


def test_a_published_local_copy_is_used_without_any_request(tmp_path, url, endpoint):
    a = machine(tmp_path, "a", url, endpoint)
    made = a.create("score", 1, {"k": 7}, [], tiny_build())
    a._fs = None  # any request would fail now: offline work on what this machine has
    assert a.find("score", made.id) == made


def test_a_manifest_naming_a_path_outside_the_artifact_is_refused(tmp_path, url, endpoint):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    artifact_id = "00000000000000ff"
    evil = {"stage": "score", "id": artifact_id, "files": {"../../escaped": "0" * 64}}
    a._fs.pipe_file(a._manifest_key("score", artifact_id), json.dumps(evil).encode())
    with pytest.raises(ArtifactError, match=r"unsafe file entry '\.\./\.\./escaped'"):
        b.find("score", artifact_id)
    assert not list(tmp_path.rglob("escaped"))


def test_load_of_a_run_output_downloads_it(tmp_path, url, endpoint):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    made = a.create("eval", 1, {}, [], tiny_build())
    loaded = b.load(b.root / f"eval/{made.id}")  # as iro.reports reads a run's outputs
    assert loaded.manifest == made.manifest


def test_the_manifest_goes_last_so_a_crash_mid_upload_publishes_nothing(
    tmp_path, url, endpoint, monkeypatch
):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # the process dies just before the manifest

    with monkeypatch.context() as m:
        m.setattr(a._fs, "pipe_file", crash)
        with pytest.raises(KeyboardInterrupt):
            a.create("score", 1, {"k": 2}, [], tiny_build())
    artifact_id = a.artifact_id("score", 1, {"k": 2}, [])
    assert a._fs.find(a._key("score", artifact_id, BLOBS))  # the files went up
    assert b.find("score", artifact_id) is None  # but nothing is published
    calls: list[str] = []
    again = a.create("score", 1, {"k": 2}, [], tiny_build(calls=calls))
    assert calls == []  # A's local copy is published by the next create, not rebuilt
    assert published_manifest(a, "score", artifact_id) == (again.path / MANIFEST).read_bytes()
    assert b.find("score", artifact_id).manifest == again.manifest


def test_two_machines_building_one_id_end_with_the_same_published_copy(tmp_path, url, endpoint):
    stores = [machine(tmp_path, name, url, endpoint) for name in ("a", "b")]
    both_built = threading.Barrier(2)
    results: dict[str, Any] = {}

    def build_on(store: RemoteArtifactStore, text: str) -> None:
        def build(out: Path) -> dict[str, Any]:
            metrics = tiny_build(text)(out)  # different bytes: a nondeterministic build
            both_built.wait(timeout=30)  # neither publishes before both have built
            return metrics

        try:
            results[text] = store.create("value", 1, {"k": 3}, [], build)
        except BaseException as err:
            results[text] = err

    threads = [
        threading.Thread(target=build_on, args=(s, t)) for s, t in zip(stores, "xy", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    x, y = results["x"], results["y"]
    assert not isinstance(x, BaseException) and not isinstance(y, BaseException), results
    published = published_manifest(stores[0], "value", x.id)
    assert (x.path / MANIFEST).read_bytes() == published == (y.path / MANIFEST).read_bytes()
    assert files_of(x.path) == files_of(y.path)
    digests = set(json.loads(published)["files"].values())
    blobs = stores[0]._fs.ls(stores[0]._key("value", x.id, BLOBS), detail=False)
    assert {Path(b).name for b in blobs} == digests  # the loser's files were removed


def test_a_published_file_changed_afterwards_is_refused_naming_it(tmp_path, url, endpoint):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    made = a.create("score", 1, {"k": 4}, [], tiny_build())
    digest = made.manifest["files"]["sub/t.parquet"]
    a._fs.pipe_file(a._blob_key("score", made.id, digest), b"not the table")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for sub/t\.parquet") as err:
        b.find("score", made.id)
    assert url in str(err.value) and "iro store quarantine" in str(err.value)
    assert not any(b.root.glob("score/*")), "nothing of the damaged artifact is kept"


def test_verify_and_quarantine_a_damaged_published_artifact(tmp_path, url, endpoint):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    sound = a.create("score", 1, {"k": 5}, [], tiny_build())
    bad = a.create("score", 1, {"k": 6}, [], tiny_build())
    a._fs.pipe_file(a._blob_key("score", bad.id, bad.manifest["files"]["note.txt"]), b"x")
    problems = {c.id: c.problem for c in b.verify()}
    assert problems[sound.id] is None
    assert "published copy: checksum mismatch for note.txt" in problems[bad.id]
    where, problem = b.quarantine(f"score/{bad.id}")
    assert ".quarantine/score/" in str(where) and "note.txt" in problem
    assert b.find("score", bad.id) is None  # unpublished: the next run rebuilds it
    rebuilt = b.create("score", 1, {"k": 6}, [], tiny_build())
    assert machine(tmp_path, "c", url, endpoint).find("score", bad.id).manifest == rebuilt.manifest


def test_run_records_reach_the_other_machine(tmp_path, url, endpoint):
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    record = {"evaluation": [{"method": "iro", "artifact": "eval/0123456789abcdef"}]}
    a.record_run_step("demo", "evaluation", record)
    remote = json.loads(a._fs.cat_file(a._key("runs", "demo", "evaluation.json")))
    assert remote == record
    assert json.loads((b.run_dir("demo") / "evaluation.json").read_text()) == record


def published_store(tmp_path: Path, url: str, endpoint: str) -> dict[str, Any]:
    """Machine A built a rollout, a score made from it and an unrelated score, and crashed
    uploading a fourth (files, no manifest); machine B recorded a run that names the score."""
    a, b = machine(tmp_path, "a", url, endpoint), machine(tmp_path, "b", url, endpoint)
    rollout = a.create("rollout", 1, {"k": 1}, [], tiny_build("r"))
    score = a.create("score", 1, {"k": 2}, [rollout], tiny_build("s"))
    unused = a.create("score", 1, {"k": 3}, [], tiny_build("u"))
    a._fs.pipe_file(a._blob_key("score", "00000000000000aa", "0" * 64), b"half an upload")
    b.record_run_step("demo", "evaluation", {"rows": [{"artifact": f"score/{score.id}"}]})
    return {"a": a, "b": b, "kept": [rollout, score], "unused": unused}


def test_gc_at_a_url_removes_only_what_no_record_references_once_old_enough(
    tmp_path, url, endpoint
):
    made = published_store(tmp_path, url, endpoint)
    a, b, unused = made["a"], made["b"], made["unused"]
    young = b.gc(min_age_hours=1)  # everything was just written: a run may not have recorded it
    assert (young.artifacts, young.staging, young.kept, young.recent) == ([], [], 2, 2)
    dry = b.gc(dry_run=True, min_age_hours=0)
    assert dry.artifacts == [f"{url}/score/{unused.id}"]
    assert dry.staging == [f"{url}/score/00000000000000aa"]
    assert (dry.kept, dry.runs, dry.bytes > 0) == (2, 1, True)
    assert machine(tmp_path, "c", url, endpoint).find("score", unused.id) is not None
    report = a.gc(min_age_hours=0)
    assert (report.artifacts, report.staging) == (dry.artifacts, dry.staging)
    d = machine(tmp_path, "d", url, endpoint)
    assert d.find("score", unused.id) is None  # unpublished: the next run that needs it rebuilds
    assert not a._marker("score", unused.id).exists()  # and A no longer takes it as published
    assert [d.find(k.stage, k.id).manifest for k in made["kept"]] == [
        k.manifest for k in made["kept"]
    ]
    assert not a._fs.exists(a._key("score", "00000000000000aa"))
    assert not a._fs.exists(a._key("score", unused.id))


def test_gc_at_a_url_keeps_the_parents_of_what_is_too_recent_and_objects_not_its_own(
    tmp_path, url, endpoint
):
    a = machine(tmp_path, "a", url, endpoint)
    parent = a.create("rollout", 1, {"k": 1}, [], tiny_build("p"))
    child = a.create("score", 1, {"k": 2}, [parent], tiny_build("c"))  # a run's, not recorded yet
    old = a.create("score", 1, {"k": 3}, [], tiny_build("o"))
    foreign = [a._key("notes", "today", "readme.txt"), a._key("score", "x1", BLOBS, "not-a-sum")]
    for key in foreign:
        a._fs.pipe_file(key, b"not the store's")
    a._written = lambda key, info: time.time() if child.id in key else 0.0  # only the child young
    report = a.gc(min_age_hours=1)
    assert (report.artifacts, report.staging) == ([f"{url}/score/{old.id}"], [])
    assert (report.kept, report.recent) == (0, 2)  # the child too recent, and so its parent
    b = machine(tmp_path, "b", url, endpoint)
    assert b.find("rollout", parent.id) is not None and b.find("score", child.id) is not None
    assert all(a._fs.exists(key) for key in foreign)


def test_gc_at_a_url_keeps_what_was_written_again_while_it_ran(tmp_path, url, endpoint):
    a = machine(tmp_path, "a", url, endpoint)
    unused = a.create("score", 1, {"k": 3}, [], tiny_build("u"))
    written = {"at": 0.0}  # old when gc first lists the bucket...
    a._written = lambda key, info: written["at"]
    read_records = a._published_records

    def records_meanwhile_rewritten():
        written["at"] = time.time()  # ...then another machine uploads the same id again
        return read_records()

    a._published_records = records_meanwhile_rewritten
    report = a.gc(min_age_hours=1)
    assert (report.artifacts, report.recent) == ([], 1)
    assert machine(tmp_path, "b", url, endpoint).find("score", unused.id) is not None


def test_gc_at_a_url_from_the_command_line(tmp_path, url, endpoint, capsys):
    from iro.app.cli import main

    made = published_store(tmp_path, url, endpoint)
    config = tmp_path / "run.yaml"
    store = {"root": url, "cache": str(tmp_path / "cli"), "options": {"endpoint_url": endpoint}}
    config.write_text(json.dumps({"store": store}))  # JSON is YAML
    assert main(["store", "gc", "--config", str(config)]) == 0  # default --min-age: all too new
    assert "removed 0 unreferenced artifacts" in capsys.readouterr().out
    assert main(["store", "gc", "--config", str(config), "--min-age", "0"]) == 0
    out = capsys.readouterr().out
    assert f"removed {url}/score/{made['unused'].id}" in out
    assert "removed 1 unreferenced artifacts, 1 abandoned staging" in out
    assert "kept 2 artifacts referenced by 1 runs" in out


def test_gc_at_a_url_stops_on_a_record_it_cannot_read(tmp_path, url, endpoint):
    made = published_store(tmp_path, url, endpoint)
    a = made["a"]
    a._fs.pipe_file(a._key("runs", "other", "evaluation.json"), b"{not json")
    with pytest.raises(ArtifactError, match=r"runs.*is not JSON.*not collecting garbage"):
        a.gc(min_age_hours=0)
    assert machine(tmp_path, "c", url, endpoint).find("score", made["unused"].id) is not None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_is_one_clear_error_without_secrets(tmp_path, endpoint, caplog):
    options = {
        "endpoint_url": f"http://127.0.0.1:{closed_port()}",
        "config_kwargs": {"retries": {"max_attempts": 1}},
        "client_kwargs": {
            "aws_access_key_id": "planted-id",
            "aws_secret_access_key": "planted-option-secret",
        },
    }
    cfg = StoreConfig(root=f"s3://{BUCKET}/x", cache=str(tmp_path / "a"), options=options)
    store = open_store(cfg)
    with caplog.at_level(logging.DEBUG), pytest.raises(ArtifactError) as err:
        store.find("score", "0123456789abcdef")
    message = str(err.value)
    assert f"s3://{BUCKET}/x" in message and "store.options.endpoint_url" in message
    assert "AWS_ACCESS_KEY_ID" in message
    for secret in (FAKE_SECRET, "planted-option-secret"):
        assert secret not in message and secret not in caplog.text


def test_a_missing_bucket_is_named(tmp_path, endpoint):
    store = open_store(
        StoreConfig(
            root="s3://no-such-bucket/p", cache=str(tmp_path), options={"endpoint_url": endpoint}
        )
    )
    with pytest.raises(ArtifactError, match="bucket 'no-such-bucket' does not exist"):
        store.find("score", "0123456789abcdef")


def test_missing_credentials_name_the_variables(tmp_path, url, endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = machine(tmp_path, "a", url, endpoint)
    with pytest.raises(ArtifactError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        store.find("score", "0123456789abcdef")


@pytest.mark.parametrize("root", ["local", "file://"])
def test_a_local_root_is_the_local_store(tmp_path, root):
    path = tmp_path / "store"
    store = open_store(StoreConfig(root=str(path) if root == "local" else f"file://{path}"))
    assert type(store) is ArtifactStore and store.root == path
    made = store.create("score", 1, {}, [], tiny_build())
    assert made.path == path / "score" / made.id


def test_a_run_decoded_elsewhere_finds_its_value_models_through_the_bucket(tmp_path, url, endpoint):
    import shutil

    from iro.core.config import ConfigError
    from iro.pipeline.aligned import value_model_dirs

    a = machine(tmp_path, "a", url, endpoint)
    trained = a.create("value", 1, {"k": 1}, [], tiny_build("weights"))
    summary = {"run_name": "demo", "policy": {"value_models": [str(trained.file("sub"))]}}
    shutil.rmtree(tmp_path / "a")  # the training machine's paths mean nothing on machine B
    b = machine(tmp_path, "b", url, endpoint)
    (found,) = value_model_dirs(b, summary)
    assert found == b.find("value", trained.id).file("sub") and (found / "t.parquet").is_file()
    summary["policy"]["value_models"] = [str(tmp_path / "gone/value/0123456789abcdef/sub")]
    with pytest.raises(ConfigError, match="value model value/0123456789abcdef"):
        value_model_dirs(b, summary)
