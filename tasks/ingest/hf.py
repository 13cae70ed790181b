"""Hugging Face datasets: `hf:NAME[:CONFIG][@REVISION]`.

NAME is either a local folder (a `save_to_disk` folder, or the parquet/JSON files of a downloaded dataset
repo) or a hub id read with `datasets.load_dataset` (online use; offline, the repo's files in the local hub
cache, as `hf download` leaves them).
The revision read is pinned: the hub's commit sha, or a content hash of a local folder.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import BadInputError

PREFIX = "hf:"
BATCH = 10_000


@dataclass(frozen=True)
class HfSource:
    name: str
    config: str | None
    revision: str | None

    @property
    def local(self) -> Path | None:
        path = Path(self.name).expanduser()
        return path if path.is_dir() else None


def parse_uri(uri: str) -> HfSource:
    body = uri.removeprefix(PREFIX)
    name, _, revision = body.partition("@")
    # a config follows the last colon, unless the colon is part of a local path that exists
    if ":" in name and not Path(name).expanduser().is_dir():
        name, _, config = name.rpartition(":")
    else:
        config = ""
    if not name:
        raise BadInputError("expected hf:NAME[:CONFIG][@REVISION]", file=uri)
    return HfSource(name, config or None, revision or None)


def is_save_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def cached_snapshot(name: str, revision: str | None, repo_type: str = "dataset") -> Path:
    """The local hub cache's copy of a repo (from an earlier download, e.g. `hf download --repo-type dataset
    NAME`); raises huggingface_hub's LocalEntryNotFoundError when there is none."""
    import huggingface_hub

    return Path(huggingface_hub.snapshot_download(name, repo_type=repo_type, revision=revision,
                                                  local_files_only=True))


def hub_revision(source: HfSource) -> str:
    """The commit sha the hub resolves the revision to; offline, the one in the local hub cache."""
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        info = huggingface_hub.HfApi().dataset_info(source.name, revision=source.revision)
        return info.sha
    except (OfflineModeIsEnabled, OSError) as online_error:
        try:
            return cached_snapshot(source.name, source.revision).name
        except Exception as exc:  # noqa: BLE001 - LocalEntryNotFoundError and friends
            raise BadInputError(f"cannot resolve the revision of dataset {source.name!r} (hub unreachable: "
                                f"{online_error}; not in the local cache: {exc}). Set SFTFLOW_ONLINE=1 to reach the "
                                "hub, or point hf: at a local save_to_disk folder or dataset repo folder",
                                file=PREFIX + source.name) from None


def load(source: HfSource, split: str | None, revision: str) -> tuple[Any, str]:
    """The `datasets.Dataset` of one split, and the split's name."""
    import datasets

    uri = PREFIX + source.name
    if source.local is not None and is_save_to_disk(source.local):
        loaded = datasets.load_from_disk(str(source.local))
    else:  # a downloaded repo folder or a hub id; only the split asked for is prepared
        folder = source.local
        if folder is None and offline():  # load_dataset cannot read the hub cache offline: read its files
            folder = cached_snapshot(source.name, revision)
        try:
            loaded = datasets.load_dataset(str(folder) if folder is not None else source.name, source.config,
                                           split=split, revision=None if folder is not None else revision)
        except ValueError as exc:
            if split and "split" in str(exc).lower():
                raise BadInputError(f"no split {split!r}: {exc} (pass --split)", file=uri) from None
            raise
    if isinstance(loaded, datasets.Dataset):
        if split and loaded.split and str(loaded.split) != split:
            raise BadInputError(f"no split {split!r}: this dataset is the {loaded.split} split", file=uri)
        return loaded, split or str(loaded.split or "train")
    splits = list(loaded)
    chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
    if chosen not in splits:
        raise BadInputError(f"no split {split!r}; the dataset has the splits {splits} (pass --split)"
                            if split else f"several splits {splits}: pass --split", file=uri)
    return loaded[chosen], chosen


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def iter_rows(dataset: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    row = 0
    for batch in dataset.with_format("arrow").iter(batch_size=BATCH):
        for record in batch.to_pylist():
            yield row, record
            row += 1
