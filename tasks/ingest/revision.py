"""What version of a source's content a run reads: the key material of the ingest.source stage.

A local file: the sha256 of its bytes (tasks/digest.py: hashed once per version of it). A remote file: its
object store's identity for its bytes (ETag, md5Hash, ...), else the sha256 of its bytes. A local dataset
folder: the hash of its files. A hub dataset: the commit sha.
"""
from __future__ import annotations

from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks.digest import file_sha256, files_sha256, object_identity, stream_sha256
from tasks.errors import BadInputError
from tasks.ingest import hf


def file_digest(uri: str) -> str:
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        if isinstance(fs, LocalFileSystem):
            return file_sha256(path)
        fs.invalidate_cache(path)  # a long-lived worker may hold a listing from before the object changed
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"source not found: {uri}") from None
    identity = object_identity(info)
    if identity is not None:
        return identity
    with fs.open(path, "rb") as fh:
        return stream_sha256(fh)


def folder_digest(folder: Path) -> str:
    """The digest of the folder's files (datasets' own .cache left out), in path order."""
    return files_sha256(folder, sorted(p for p in folder.rglob("*")
                                       if p.is_file() and ".cache" not in p.relative_to(folder).parts))


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
