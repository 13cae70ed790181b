"""hf: sources from local copies: a save_to_disk folder, downloaded dataset repo folders (parquet, JSON), and a
hub id whose repo is in the local hub cache (as `hf download` leaves it), read through `datasets` exactly as a
hub dataset is; a hub id that is neither reachable nor cached fails clearly."""
from __future__ import annotations

import json

import pytest

from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.stages.ingest_source import STAGE as SOURCE_STAGE
from tasks.stages.ingest_source import SourceConfig
from tests.ingest_helpers import ingest, messages

GUANACO = [{"text": "### Human: Name a bird.### Assistant: Owl."},
           {"text": "### Human: Name a fish.### Assistant: Trout.### Human: Another?### Assistant: Carp."}]
TEST_ROWS = [{"text": "### Human: Name a tree.### Assistant: Oak."}]


@pytest.fixture(scope="module")
def dataset_dict():
    datasets = pytest.importorskip("datasets")
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(GUANACO),
                                 "test": datasets.Dataset.from_list(TEST_ROWS)})


def test_save_to_disk_folder_with_splits(tmp_path, dataset_dict, store):
    folder = tmp_path / "guanaco_saved"
    dataset_dict.save_to_disk(str(folder))
    table, stats, _ = ingest(f"hf:{folder}")
    assert stats["split"] == "train" and stats["format"] == "guanaco" and stats["kept"] == 2
    assert len(stats["revision"]) == 64  # sha256 over the folder's files
    assert messages(table, 1)[-1] == ("assistant", "Carp.")
    test_table, test_stats, _ = ingest(f"hf:{folder}", split="test")
    assert test_stats["split"] == "test" and messages(test_table) == [("user", "Name a tree."), ("assistant", "Oak.")]
    assert test_table.column("source")[0].as_py() == {"uri": f"hf:{folder}", "format": "guanaco", "split": "test",
                                                      "row": 0}
    with pytest.raises(BadInputError, match=r"no split 'validation'.*\['train', 'test'\]"):
        ingest(f"hf:{folder}", split="validation")
    result = run_stage(SOURCE_STAGE, SourceConfig(path=f"hf:{folder}"), {}, store)
    assert store.manifest(result.ref.key)["stats"]["revision"] == stats["revision"], "the revision is in the manifest"


def test_downloaded_repo_folder_of_parquet_files(tmp_path, dataset_dict, store):
    repo = tmp_path / "openassistant-guanaco"
    (repo / "data").mkdir(parents=True)
    dataset_dict["train"].to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    dataset_dict["test"].to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    table, stats, _ = ingest(f"hf:{repo}")
    assert stats["split"] == "train" and stats["kept"] == 2
    test_table, test_stats, _ = ingest(f"hf:{repo}", split="test")
    assert test_stats["split"] == "test" and messages(test_table)[-1] == ("assistant", "Oak.")
    with pytest.raises(BadInputError, match="no split 'validation'"):
        ingest(f"hf:{repo}", split="validation")
    first = run_stage(SOURCE_STAGE, SourceConfig(path=f"hf:{repo}"), {}, store)
    assert run_stage(SOURCE_STAGE, SourceConfig(path=f"hf:{repo}"), {}, store).status == "cached"
    dataset_dict["test"].to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    changed = run_stage(SOURCE_STAGE, SourceConfig(path=f"hf:{repo}"), {}, store)
    assert changed.status == "ran" and changed.ref.key != first.ref.key and changed.ref.rows == 1


def test_downloaded_repo_folder_of_json_files(tmp_path):
    repo = tmp_path / "alpaca_repo"
    repo.mkdir()
    records = [{"instruction": "Add.", "input": "1 and 2", "output": "3"}, {"instruction": "Hi", "input": "",
                                                                          "output": "Hello"}]
    (repo / "train.json").write_text(json.dumps(records))
    table, stats, _ = ingest(f"hf:{repo}")
    assert stats["format"] == "alpaca" and table.num_rows == 2


def test_hub_id_offline_reads_the_local_hub_cache_and_pins_its_commit(tmp_path, monkeypatch, store):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--sftflow-tests--guanaco-mini"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "data").mkdir(parents=True)
    (repo / "snapshots" / commit / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GUANACO))
    for uri in ("hf:sftflow-tests/guanaco-mini", f"hf:sftflow-tests/guanaco-mini@{commit}"):
        table, stats, _ = ingest(uri)
        assert stats["revision"] == commit and stats["split"] == "train" and stats["format"] == "guanaco"
        assert messages(table, 1)[-1] == ("assistant", "Carp.")
    result = run_stage(SOURCE_STAGE, SourceConfig(path="hf:sftflow-tests/guanaco-mini"), {}, store)
    assert store.manifest(result.ref.key)["stats"]["revision"] == commit


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInputError, match="cannot resolve the revision.*SFTFLOW_ONLINE=1"):
        ingest("hf:sftflow-tests/no-such-dataset@main", split="train")
