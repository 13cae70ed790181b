"""A conversation dataset of the store written to destinations (any fsspec URL) in export formats
(tasks/exports.py), all or nothing, with its provenance (tasks/provenance.py).

Every export is made in a local staging folder first (what the format cannot hold is counted there, and a
refusal stops before any destination is touched), then uploaded under a temporary name beside its destination,
and renamed into place only once every destination has been uploaded: a failure leaves the destinations as they
were. A file export gets `PATH.sftflow.json` beside it; a folder export (`hf`, `llamafactory`) holds
`sftflow.json` and a dataset card (`README.md`). `present` checks later that the files are still there, so the
export stage's cached output is not trusted once they are gone.
"""
from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem

from storage.schema import CONVERSATION_SCHEMA
from storage.store import Store
from tasks.digest import stream_sha256
from tasks.errors import BadInputError
from tasks.exports import FOLDER_FORMATS, Options, write_export
from tasks.provenance import card, provenance

PROVENANCE_FILE = "sftflow.json"
CARD_FILE = "README.md"
SIDECAR_SUFFIX = ".sftflow.json"  # beside a file export
USE = {  # the card's "Use" section for each folder format; PATH and NAME are filled in
    "hf": "```python\nfrom datasets import load_from_disk\n\nds = load_from_disk(\"PATH\")  # the `messages` column: "
          "TRL's SFTTrainer(train_dataset=ds) reads it as is\n```",
    "llamafactory": "In LLaMA-Factory's training YAML:\n\n```yaml\ndataset_dir: PATH\ndataset: NAME\n```",
}


class Target(Protocol):
    format: str
    path: str


@dataclass
class Written:
    """One destination: what went there, and every file written with its size (what `present` checks)."""

    format: str
    path: str
    rows: int
    left_out: dict[str, dict[str, Any]]  # reason -> {"count", "first_ids"}
    files: list[dict[str, Any]]  # {"path", "bytes", "sha256"}


def check_conversations(store: Store, key: str) -> None:
    """Bad input unless `key` holds canonical conversation records (a selection, conversations, an eval set), at
    least one."""
    manifest = store.manifest(key)
    columns = {entry.split(":", 1)[0] for entry in manifest.get("schema", [])}
    missing = [name for name in CONVERSATION_SCHEMA.names if name not in columns]
    if missing:
        raise BadInputError(f"{key} ({manifest['stage']}) is not a conversation dataset, it has no "
                            f"{', '.join(missing)} column: export reads selections, conversations (dedup's -removed "
                            "rows too) and eval sets", field="KEY")
    if not manifest["rows"]:  # (an empty `hf` folder would not even load: datasets needs one shard)
        raise BadInputError(f"{key} ({manifest['stage']}) has no rows to export", field="KEY")


def export_dataset(store: Store, key: str, targets: Sequence[Target], options: Options, staging: Path,
                   replace: bool, licenses: Mapping[str, str] | None = None) -> list[Written]:
    """Write dataset `key` to every target, or to none (see the module docstring). `replace`: what is at a
    destination is replaced; otherwise a destination that exists is bad input. `licenses`: source path ->
    licence, over those the sources' manifests record."""
    check_conversations(store, key)
    if not replace:
        for target in targets:
            for path in (target.path, sidecar(target)):
                if path and _exists(path):
                    raise BadInputError(f"{path} exists: pass --force (export.replace: true) to replace it",
                                        field="to")
    facts = provenance(store, key, licenses)
    folder = staging / f"export-{uuid.uuid4().hex[:8]}"
    try:
        staged = [_stage(store, key, target, options, facts, folder / str(i)) for i, target in enumerate(targets)]
        return _publish(staged, replace)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sidecar(target: Target) -> str | None:
    """Where a file export's provenance goes (a folder export holds its own)."""
    return None if target.format in FOLDER_FORMATS else target.path + SIDECAR_SUFFIX


@dataclass
class _Staged:
    target: Target
    local: Path  # the export, a file or a folder
    local_sidecar: Path | None
    rows: int
    left_out: dict[str, dict[str, Any]]


def _stage(store: Store, key: str, target: Target, options: Options, facts: dict[str, Any], folder: Path) -> _Staged:
    name = target.path.rstrip("/").rsplit("/", 1)[-1]
    local = folder / name
    local.parent.mkdir(parents=True)
    done = write_export(store.iter_batches(key), target.format, str(local), options)
    left_out = {reason: {"count": n, "first_ids": done.first_ids.get(reason, [])} for reason, n in done.skipped.items()}
    if "multi_turn" in left_out:
        first = ", ".join(left_out["multi_turn"]["first_ids"])
        raise BadInputError(f"alpaca holds one exchange per record, and {left_out['multi_turn']['count']} "
                            f"conversation(s) have more (first ids: {first}): pass --multi-turn history (export."
                            "multi_turn: history) to put the earlier turns in LLaMA-Factory's history",
                            field="multi_turn")
    files = [{"name": p.relative_to(folder).as_posix(), **_size_and_sha256(p)} for p in _files(local)]
    exported = {"format": target.format, "path": target.path, "rows": done.written, "left_out": left_out,
                "options": {"system": options.system, "multi_turn": "history" if options.history else "refuse",
                            "lineage": options.lineage},
                "files": files, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    record = {**facts, "exported": exported}
    payload = json.dumps(record, indent=2, ensure_ascii=False, default=str)
    if target.format in FOLDER_FORMATS:
        (local / PROVENANCE_FILE).write_text(payload, encoding="utf-8")
        use = USE[target.format].replace("PATH", target.path).replace("NAME", name)
        (local / CARD_FILE).write_text(card(record, f"sftflow export of {key}", use), encoding="utf-8")
        return _Staged(target, local, None, done.written, left_out)
    local_sidecar = local.with_name(local.name + SIDECAR_SUFFIX)
    local_sidecar.write_text(payload, encoding="utf-8")
    return _Staged(target, local, local_sidecar, done.written, left_out)


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _size_and_sha256(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return {"bytes": path.stat().st_size, "sha256": stream_sha256(fh)}


def _publish(staged: Sequence[_Staged], replace: bool) -> list[Written]:
    """Upload every export under a temporary name beside its destination, then rename them all into place."""
    moves: list[_Move] = []
    try:
        for item in staged:
            for local, final in ((item.local, item.target.path), (item.local_sidecar, sidecar(item.target))):
                if local is None or final is None:
                    continue
                fs, path = fsspec.core.url_to_fs(final)  # a local path comes back absolute
                parent, name = path.rstrip("/").rsplit("/", 1)
                move = _Move(fs, f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}", path, local.is_dir())
                moves.append(move)
                fs.makedirs(parent, exist_ok=True)
                fs.put(str(local), move.temporary, recursive=move.folder)
    except OSError as exc:
        _remove(moves)
        raise BadInputError(f"cannot write {item.target.path}: {exc.strerror or exc}", field="to") from None
    for move in moves:
        move.fs.invalidate_cache(move.path)
        if replace and move.fs.exists(move.path):
            move.fs.rm(move.path, recursive=True)
        move.rename()
    return [_written(item) for item in staged]


@dataclass
class _Move:
    fs: fsspec.AbstractFileSystem
    temporary: str
    path: str
    folder: bool

    def rename(self) -> None:
        """One rename on a local disk; file by file on an object store, where a rename is a copy anyway and s3fs
        does not copy a prefix as one."""
        if not self.folder or isinstance(self.fs, LocalFileSystem):
            self.fs.mv(self.temporary, self.path)
            return
        for name in self.fs.find(self.temporary):
            self.fs.mv(name, self.path + name[len(self.temporary):])


def _remove(moves: Iterable[_Move]) -> None:
    for move in moves:
        try:
            move.fs.rm(move.temporary, recursive=True)
        except OSError:  # never written (or under a path that is not a folder)
            pass


def _written(item: _Staged) -> Written:
    """The destination's files with their sizes and checksums, named by their full URL."""
    target, files = item.target, []
    for local in _files(item.local):
        relative = local.relative_to(item.local).as_posix()
        files.append({"path": target.path.rstrip("/") + (f"/{relative}" if relative != "." else ""),
                      **_size_and_sha256(local)})
    if item.local_sidecar is not None:
        files.append({"path": sidecar(target), **_size_and_sha256(item.local_sidecar)})
    return Written(target.format, target.path, item.rows, item.left_out, files)


def _exists(path: str) -> bool:
    fs, stripped = fsspec.core.url_to_fs(path)
    fs.invalidate_cache(stripped)  # a listing from before another writer wrote it
    return fs.exists(stripped)


def present(written: Iterable[dict[str, Any]]) -> bool:
    """Every file of these exports (`Written` as dicts) still there with the size it was written with."""
    for entry in written:
        for file in entry["files"]:
            fs, path = fsspec.core.url_to_fs(file["path"])
            try:
                fs.invalidate_cache(path)
                if int(fs.info(path).get("size", -1)) != file["bytes"]:
                    return False
            except FileNotFoundError:
                return False
    return True
