"""What version of a source's content a run reads: the key material of the ingest.source stage.

A file: a blake2b hash of its bytes (remembered per path, size and mtime, so a key computed twice in one
process hashes once). A local dataset folder: the hash of its files. A hub dataset: the commit sha.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec

from tasks.errors import BadInputError
from tasks.ingest import hf

CHUNK = 8 << 20
_memo: dict[tuple[str, int, int], str] = {}


def file_digest(uri: str) -> str:
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"source not found: {uri}") from None
    stamp = (fs.unstrip_protocol(path), int(info.get("size") or 0), _mtime_ns(path, info))
    if stamp[2] and stamp in _memo:
        return _memo[stamp]
    hasher = hashlib.blake2b(digest_size=20)
    buffer = bytearray(CHUNK)  # one buffer read into again and again: no fresh pages to map for every chunk
    view = memoryview(buffer)
    with fs.open(path, "rb") as fh:
        while size := fh.readinto(buffer):
            hasher.update(view[:size])
    _memo[stamp] = hasher.hexdigest()
    return _memo[stamp]


def _mtime_ns(path: str, info: dict) -> int:
    if os.path.exists(path):
        return os.stat(path).st_mtime_ns
    return 0  # remote: no reliable mtime, hash every time


def folder_digest(folder: Path) -> str:
    hasher = hashlib.blake2b(digest_size=20)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts):
        hasher.update(path.relative_to(folder).as_posix().encode() + b"\0" + file_digest(str(path)).encode())
    return hasher.hexdigest()


def source_revision(uri: str) -> str:
    if uri.startswith(hf.PREFIX):
        source = hf.parse_uri(uri)
        if source.local is not None:
            return folder_digest(source.local)
        if source.revision and len(source.revision) == 40 and all(c in "0123456789abcdef" for c in source.revision):
            return source.revision  # already a commit sha: nothing to resolve
        return hf.hub_revision(source)
    if uri.endswith("/") or Path(uri).is_dir():
        raise BadInputError("a folder is not a source file; for a dataset folder use hf:PATH", file=uri)
    return file_digest(uri)
