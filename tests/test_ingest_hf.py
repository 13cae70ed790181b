"""hf: sources from local copies: a save_to_disk folder and downloaded dataset repo folders (parquet, JSON),
read through `datasets` exactly as a hub dataset is; the hub path itself fails clearly when offline."""
from __future__ import annotations

import json

import pytest

from flows.config import SourceConfig
from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.ingest import SOURCE_STAGE
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


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInputError, match="cannot resolve the revision.*SFTFLOW_ONLINE=1"):
        ingest("hf:sftflow-tests/no-such-dataset@main", split="train")
