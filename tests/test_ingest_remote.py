"""Object stores: s3:// sources and an s3:// store through s3fs against a local S3 API (moto's server), and
memory:// for a filesystem that says nothing about its objects' content. A cached run must not download an S3
source to find its key; a rewritten object must get a new key; the store publishes, serves and rebuilds on S3."""
from __future__ import annotations

import json

import fsspec
import pytest

from storage.stage import run_stage
from tasks.ingest import revision
from tasks.stages.ingest import STAGE as MERGE_STAGE
from tasks.stages.ingest import IngestConfig
from tasks.stages.ingest_source import STAGE as SOURCE_STAGE
from tasks.stages.ingest_source import SourceConfig

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")  # the `s3` fixture (conftest.py): a local S3 API

ALPACA = [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
          {"instruction": "Name a color.", "input": "", "output": "Blue."}]


def counting_hashes(monkeypatch) -> list[str]:
    """The sources whose bytes the key computation reads."""
    read: list[str] = []
    original = revision.stream_sha256

    def counted(fh):
        read.append(getattr(fh, "path", str(fh)))
        return original(fh)

    monkeypatch.setattr(revision, "stream_sha256", counted)
    return read


def test_s3_source_is_keyed_by_its_etag_without_download_and_a_rewrite_changes_the_key(s3, store, monkeypatch):
    uri = "s3://sftflow-test/alpaca.json"
    s3.pipe(uri, json.dumps(ALPACA).encode())
    hashed = counting_hashes(monkeypatch)
    first = run_stage(SOURCE_STAGE, SourceConfig(path=uri), {}, store)
    assert first.status == "ran" and first.stats["kept"] == 2
    again = run_stage(SOURCE_STAGE, SourceConfig(path=uri), {}, store)
    assert (again.status, again.ref.key) == ("cached", first.ref.key)
    assert hashed == [], "the key came from the object's metadata, not its bytes"

    fsspec.filesystem("s3").ls("sftflow-test")  # the stage's client now holds a listing of the bucket...
    s3.pipe(uri, json.dumps(ALPACA[:1]).encode())  # ...from before the object is rewritten through another client
    changed = run_stage(SOURCE_STAGE, SourceConfig(path=uri), {}, store)
    assert changed.status == "ran" and changed.ref.key != first.ref.key and changed.stats["kept"] == 1


def test_a_missing_s3_object_is_a_clear_error(s3):
    with pytest.raises(FileNotFoundError, match="source not found: s3://sftflow-test/nothing.json"):
        revision.file_digest("s3://sftflow-test/nothing.json")


def test_a_store_without_content_metadata_is_hashed_every_time(store, monkeypatch):
    uri = "memory://sftflow-test-remote/alpaca.jsonl"
    fs = fsspec.filesystem("memory")
    fs.pipe(uri, "".join(json.dumps(r) + "\n" for r in ALPACA).encode())
    hashed = counting_hashes(monkeypatch)
    first = run_stage(SOURCE_STAGE, SourceConfig(path=uri), {}, store)
    fs.pipe(uri, "".join(json.dumps(r) + "\n" for r in ALPACA[::-1]).encode())  # same size, other bytes
    second = run_stage(SOURCE_STAGE, SourceConfig(path=uri), {}, store)
    assert len(hashed) == 2 and second.ref.key != first.ref.key and second.status == "ran"
    fs.rm(uri)


def test_a_store_on_s3_publishes_verifies_and_serves_cache_hits(s3, tmp_path):
    from storage.stage import companion_key
    from storage.store import Store
    from tests.ingest_helpers import write_jsonl

    source = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA + [{"instruction": "No answer.", "output": ""}])
    remote = Store("s3://sftflow-test/store")
    first = run_stage(SOURCE_STAGE, SourceConfig(path=str(source)), {}, remote)
    assert first.status == "ran" and remote.verify(first.ref.key)
    assert remote.read_table(first.ref.key).num_rows == 2
    assert remote.read_table(companion_key(first.ref.key, "quarantine")).num_rows == 1
    again = run_stage(SOURCE_STAGE, SourceConfig(path=str(source)), {}, remote)
    assert (again.status, again.ref.key, again.stats["kept"]) == ("cached", first.ref.key, 2)
    merged = run_stage(MERGE_STAGE, IngestConfig(sources=[SourceConfig(path=str(source))]),
                       {"source_000": first.ref}, remote)  # reads the source's shards back from S3
    assert merged.stats["read"] == 3 and remote.read_table(merged.ref.key).equals(remote.read_table(first.ref.key))
    s3.rm(f"sftflow-test/store/{first.ref.key}/_manifest.json")  # a damaged copy is rebuilt, not served
    assert not remote.verify(first.ref.key)
    assert run_stage(SOURCE_STAGE, SourceConfig(path=str(source)), {}, remote).status == "ran"


def test_every_file_kind_reads_from_s3_as_from_disk(s3, tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    from openpyxl import Workbook

    from tests.ingest_helpers import ingest, write_json, write_jsonl

    local = [write_json(tmp_path / "a.json", ALPACA), tmp_path / "a.jsonl.gz", tmp_path / "a.csv",
             tmp_path / "a.parquet", tmp_path / "a.xlsx", tmp_path / "a.jsonl"]
    local[1].write_bytes(gzip.compress(write_jsonl(tmp_path / "a.jsonl", ALPACA).read_bytes()))
    local[2].write_text("instruction,input,output\n" + "".join(
        f'"{r["instruction"]}","{r["input"]}","{r["output"]}"\n' for r in ALPACA), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ALPACA), local[3])
    book = Workbook()
    book.active.append(["instruction", "input", "output"])
    for r in ALPACA:
        book.active.append([r["instruction"], r["input"], r["output"]])
    book.save(local[4])
    for path in local:
        s3.put(str(path), f"sftflow-test/kinds/{path.name}")
        on_disk, on_s3 = ingest(path), ingest(f"s3://sftflow-test/kinds/{path.name}")
        assert on_s3[0].column("id").to_pylist() == on_disk[0].column("id").to_pylist(), path.name
        assert on_s3[1]["kept"] == 2 and on_s3[0].column("source")[0].as_py()["uri"].startswith("s3://")
