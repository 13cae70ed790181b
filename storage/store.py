"""The parquet stage store: datasets and model artifacts under one fsspec root, published atomically.

Layout under the root:
    <key>/_manifest.json           written last: a directory without it is not a dataset
    <key>/part-00000-<writer>.parquet
    <key>/files/...                extra files (reports, PNGs, model weights)
    .tmp/<key>.<writer>/           work in progress; `gc` removes what a crash left behind

A dataset counts as present only when its manifest parses and every shard and file it lists is there with
the size it lists; anything else is treated as missing (and rebuilt), never as a cache hit.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from storage.home import default_store_url, sftflow_home

MANIFEST = "_manifest.json"
TMP_DIR = ".tmp"
TRASH_DIR = ".trash"
SHARD_ROWS = 100_000


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sftflow")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+source"


@dataclass(frozen=True)
class DatasetRef:
    """What a stage returns and Prefect persists: a pointer into the store, never the data itself."""

    store: str
    key: str
    stage: str
    rows: int
    kind: str = "dataset"  # or "model"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DatasetMissing(FileNotFoundError):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    def __init__(self, url: str | None = None):
        self.url = url or default_store_url()
        fs, root = fsspec.core.url_to_fs(self.url)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.is_local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        if self.is_local:
            self.root = os.path.abspath(self.root)
            self.url = self.root

    # -- paths ---------------------------------------------------------------------------------------
    def path(self, key: str, *parts: str) -> str:
        return "/".join([self.root, key, *parts])

    def local_path(self, key: str, *parts: str) -> Path:
        """A local filesystem path for a stored file (downloaded to a local cache when the store is remote)."""
        if self.is_local:
            return Path(self.path(key, *parts))
        manifest = self.manifest(key)
        cache = Path(os.environ.get("SFTFLOW_CACHE") or sftflow_home() / "cache" / "store") / key
        stamp = cache / MANIFEST
        if not stamp.exists() or json.loads(stamp.read_text()) != manifest:
            if cache.exists():
                shutil.rmtree(cache)
            cache.mkdir(parents=True)
            self.fs.get(self.path(key) + "/", str(cache) + "/", recursive=True)
        return cache.joinpath(*parts)

    # -- reading ------------------------------------------------------------------------------------
    def manifest(self, key: str) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(self.path(key, MANIFEST)))
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise DatasetMissing(f"no complete dataset {key!r} in store {self.url}") from exc

    def verify(self, key: str) -> bool:
        """True only if the manifest and every file it lists exist with the listed sizes."""
        try:
            manifest = self.manifest(key)
        except DatasetMissing:
            return False
        try:
            listing = {self._relative(key, name): info for name, info in
                       self.fs.find(self.path(key), detail=True).items()}
        except FileNotFoundError:
            return False
        for entry in manifest.get("shards", []) + manifest.get("files", []):
            found = listing.get(entry["name"])
            if found is None or int(found.get("size", -1)) != entry["bytes"]:
                return False
        return True

    def _relative(self, key: str, name: str) -> str:
        prefix = self.fs._strip_protocol(self.path(key)).rstrip("/") + "/"
        return self.fs._strip_protocol(name)[len(prefix):]

    def ref(self, key: str) -> DatasetRef:
        m = self.manifest(key)
        return DatasetRef(self.url, key, m["stage"], m["rows"], m.get("kind", "dataset"))

    def shard_names(self, key: str) -> list[str]:
        return [s["name"] for s in self.manifest(key)["shards"]]

    def read_shard(self, key: str, index: int, columns: list[str] | None = None) -> pa.Table:
        name = self.shard_names(key)[index]
        with self.fs.open(self.path(key, name), "rb") as fh:
            return pq.read_table(fh, columns=columns)

    def read_table(self, key: str, columns: list[str] | None = None) -> pa.Table:
        manifest = self.manifest(key)
        tables = []
        for shard in manifest["shards"]:
            with self.fs.open(self.path(key, shard["name"]), "rb") as fh:
                tables.append(pq.read_table(fh, columns=columns))
        return pa.concat_tables(tables) if tables else pa.table({})

    def iter_batches(self, key: str, batch_size: int = 10_000, columns: list[str] | None = None,
                     part: tuple[int, int] | None = None) -> Iterator[pa.RecordBatch]:
        """The rows in batches; `part=(i, n)`: only the i-th of n equal row ranges (a sharded stage's share)."""
        manifest = self.manifest(key)
        start, stop = row_range(manifest["rows"], part)
        offset = 0
        for shard in manifest["shards"]:
            if offset >= stop:
                break
            if offset + shard["rows"] > start:
                with self.fs.open(self.path(key, shard["name"]), "rb") as fh:
                    for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_size, columns=columns):
                        if offset >= stop:
                            break
                        lo, hi = max(start - offset, 0), min(stop - offset, batch.num_rows)
                        if hi > lo:
                            yield batch if (lo, hi) == (0, batch.num_rows) else batch.slice(lo, hi - lo)
                        offset += batch.num_rows
            else:
                offset += shard["rows"]

    def read_file(self, key: str, name: str) -> bytes:
        return self.fs.cat_file(self.path(key, "files", name))

    # -- listing and housekeeping ---------------------------------------------------------------------
    def keys(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        names = sorted(Path(e).name for e in entries)
        return [n for n in names if not n.startswith(".") and self.fs.exists(self.path(n, MANIFEST))]

    def resolve(self, reference: str, stages: tuple[str, ...] | None = None) -> list[str]:
        """The keys `reference` names: itself when it is a complete dataset, else every key it is a prefix of
        (of one of `stages` when given)."""
        if self.verify(reference):
            return [reference]
        return [k for k in self.keys() if k.startswith(reference)
                and (stages is None or self.manifest(k)["stage"] in stages)]

    def ls(self) -> list[dict[str, Any]]:
        rows = []
        for key in self.keys():
            try:
                m = self.manifest(key)
            except DatasetMissing:
                continue
            size = sum(e["bytes"] for e in m.get("shards", []) + m.get("files", []))
            rows.append({"key": key, "stage": m["stage"], "kind": m.get("kind", "dataset"), "rows": m["rows"],
                         "bytes": size, "created": m["created"], "complete": self.verify(key)})
        return rows

    def gc(self, older_than_s: float = 3600.0) -> list[str]:
        """Remove temporary and trashed directories older than `older_than_s` and files no manifest lists."""
        removed = []
        cutoff = time.time() - older_than_s
        for sub in (TMP_DIR, TRASH_DIR):
            base = f"{self.root}/{sub}"
            if not self.fs.exists(base):
                continue
            for entry in self.fs.ls(base, detail=True):
                if _mtime(self.fs, entry) <= cutoff:
                    self.fs.rm(entry["name"], recursive=True)
                    removed.append(entry["name"])
        for key in self.keys():
            try:
                m = self.manifest(key)
            except DatasetMissing:
                continue
            listed = {s["name"] for s in m["shards"]} | {f["name"] for f in m.get("files", [])} | {MANIFEST}
            for name in self.fs.find(self.path(key)):
                rel = self._relative(key, name)
                if rel not in listed and _mtime(self.fs, self.fs.info(name)) <= cutoff:
                    self.fs.rm(name)
                    removed.append(name)
        return removed

    def delete(self, key: str) -> None:
        if self.fs.exists(self.path(key)):
            self.fs.rm(self.path(key), recursive=True)

    # -- writing ------------------------------------------------------------------------------------
    def writer(self, key: str, stage: str, replace: bool = False, **manifest_fields: Any) -> DatasetWriter:
        """`replace=True` swaps out an existing good copy (a forced re-run); otherwise the first copy wins."""
        return DatasetWriter(self, key, stage, manifest_fields, replace)

    def publish_table(self, key: str, stage: str, table: pa.Table | Iterable[pa.Table], replace: bool = False,
                      **manifest_fields: Any) -> DatasetRef:
        with self.writer(key, stage, replace, **manifest_fields) as w:
            for part in [table] if isinstance(table, pa.Table) else table:
                w.write(part)
        return w.ref


def row_range(rows: int, part: tuple[int, int] | None) -> tuple[int, int]:
    """[start, stop) of part i of n over `rows` rows (the whole range without a part)."""
    if part is None:
        return 0, rows
    i, n = part
    return i * rows // n, (i + 1) * rows // n


def _mtime(fs: fsspec.AbstractFileSystem, info: dict[str, Any]) -> float:
    for field in ("mtime", "created", "LastModified", "updated"):
        value = info.get(field)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        return float(value)
    return 0.0


class DatasetWriter:
    """Collects shards and files in a temporary directory; publishes them on a clean exit only.

    Locally the directory is renamed into place (atomic). On object stores, where a rename is a copy, the
    shards are copied to the final prefix under writer-unique names and the manifest is put last: until
    it lands nothing is visible, and a reader only ever reads the shards its manifest names.
    """

    def __init__(self, store: Store, key: str, stage: str, manifest_fields: dict[str, Any], replace: bool):
        self.store, self.key, self.stage, self.replace = store, key, stage, replace
        self.fields = dict(manifest_fields)
        self.writer_id = uuid.uuid4().hex[:12]
        self.tmp = f"{store.root}/{TMP_DIR}/{key}.{self.writer_id}"
        self.shards: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.schema: pa.Schema | None = None
        self.rows = 0
        self.ref: DatasetRef | None = None
        self._started = time.time()
        self._encoder: ThreadPoolExecutor | None = None
        self._encoding: Future[None] | None = None  # the shard being written in the background

    def __enter__(self) -> DatasetWriter:
        self.store.fs.makedirs(self.tmp, exist_ok=True)
        return self

    def write(self, table: pa.Table | pa.RecordBatch, shard_rows: int = SHARD_ROWS) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self.schema is None:
            self.schema = table.schema
        elif not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        for start in range(0, max(table.num_rows, 1), shard_rows):
            part = table.slice(start, shard_rows)
            if part.num_rows == 0 and self.shards:
                continue
            shard = {"name": f"part-{len(self.shards):05d}-{self.writer_id}.parquet", "rows": part.num_rows}
            self.shards.append(shard)
            self.rows += part.num_rows
            self._queue(shard, part)

    def _queue(self, shard: dict[str, Any], part: pa.Table) -> None:
        """Encode and store the shard on a background thread: parquet encoding and compression run without the
        GIL, beside whatever produces the next part. One shard at a time, so memory stays flat."""
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._wait_for_shard()
        self._encoding = self._encoder.submit(self._write_shard, shard, part)

    def _write_shard(self, shard: dict[str, Any], part: pa.Table) -> None:
        sink = pa.BufferOutputStream()  # an Arrow sink: no GIL taken per write, as a Python file would
        pq.write_table(part, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        self.store.fs.pipe_file(f"{self.tmp}/{shard['name']}", data)
        shard["bytes"] = len(data)

    def _wait_for_shard(self) -> None:
        """Wait for the shard being written; raise its error."""
        encoding, self._encoding = self._encoding, None
        if encoding is not None:
            encoding.result()

    def _finish_shards(self) -> None:
        try:
            self._wait_for_shard()
        finally:
            if self._encoder is not None:
                self._encoder.shutdown(wait=True)

    def add_file(self, name: str, data: bytes | str | Path) -> None:
        """Store an extra file (report, PNG, checkpoint); a directory Path is added recursively."""
        if isinstance(data, Path) and data.is_dir():
            for child in sorted(p for p in data.rglob("*") if p.is_file()):
                self.add_file(f"{name}/{child.relative_to(data).as_posix()}", child)
            return
        target = f"{self.tmp}/files/{name}"
        self.store.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if isinstance(data, Path):
            self.store.fs.put_file(str(data), target)
            size = data.stat().st_size
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else data
            self.store.fs.pipe_file(target, payload)
            size = len(payload)
        self.files.append({"name": f"files/{name}", "bytes": size})

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._finish_shards()
        except BaseException:  # a shard that failed in the background fails the dataset
            if exc_type is None:
                self._remove_tmp()
                raise
        if exc_type is not None:
            self._remove_tmp()
            return
        self._publish()

    def _remove_tmp(self) -> None:
        """Remove the temporary directory; on an object store it is gone once its last object moved or was never
        there (a failed write that wrote nothing), which is no error."""
        try:
            self.store.fs.rm(self.tmp, recursive=True)
        except FileNotFoundError:
            pass

    def _manifest(self) -> dict[str, Any]:
        kind = self.fields.pop("kind", "model" if not self.shards and self.files else "dataset")
        return {
            "key": self.key,
            "stage": self.stage,
            "kind": kind,
            "rows": self.rows,
            "schema": [f"{f.name}: {f.type}" for f in self.schema] if self.schema else [],
            "shards": self.shards,
            "files": self.files,
            "code_version": code_version(),
            "created": _now(),
            "seconds": round(time.time() - self._started, 3),
            **self.fields,
        }

    def _publish(self) -> None:
        fs, final = self.store.fs, self.store.path(self.key)
        manifest = self._manifest()
        payload = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        if self.store.is_local:
            fs.pipe_file(f"{self.tmp}/{MANIFEST}", payload)
            if os.path.exists(final):
                # Another writer (or a damaged earlier copy) is there. A good copy wins; a bad one is replaced.
                if self.store.verify(self.key) and not self.replace:
                    self._remove_tmp()
                    self.ref = self.store.ref(self.key)
                    return
                trash = f"{self.store.root}/{TRASH_DIR}/{self.key}.{self.writer_id}"
                fs.makedirs(f"{self.store.root}/{TRASH_DIR}", exist_ok=True)
                try:
                    os.rename(final, trash)
                except FileNotFoundError:
                    pass
            try:
                os.rename(self.tmp, final)
            except OSError:  # lost a race to a concurrent writer that published the same key
                if not self.store.verify(self.key):
                    raise
                self._remove_tmp()
        else:
            for entry in self.shards + self.files:
                fs.mv(f"{self.tmp}/{entry['name']}", f"{final}/{entry['name']}")
            fs.pipe_file(f"{final}/{MANIFEST}", payload)  # last: this makes the dataset visible
            self._remove_tmp()
        self.ref = DatasetRef(self.store.url, self.key, self.stage, self.rows, manifest["kind"])
