"""The ingest stages through run_stage (the store, keys, companions) and the `sftflow ingest` command."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from storage.stage import companion_key, run_stage
from tasks.errors import BadInputError
from tasks.ingest import QUARANTINE_SCHEMA
from tasks.stages.ingest import STAGE as MERGE_STAGE
from tasks.stages.ingest import IngestConfig
from tasks.stages.ingest_source import STAGE as SOURCE_STAGE
from tasks.stages.ingest_source import SourceConfig
from tests.conftest import ROOT
from tests.ingest_helpers import write_json, write_jsonl

ALPACA = [{"instruction": "Add.", "input": "1 and 2", "output": "3"}, {"instruction": "Hi", "output": ""}]
GUANACO = [{"text": "### Human: Add.\n\n1 and 2### Assistant: 3"},
           {"text": "### Human: Name a bird.### Assistant: Owl"}]


def test_unchanged_bytes_are_a_cache_hit_changed_bytes_a_new_key(tmp_path, store):
    path = write_json(tmp_path / "a.json", ALPACA)
    config = SourceConfig(path=str(path))
    first = run_stage(SOURCE_STAGE, config, {}, store)
    assert first.status == "ran" and first.ref.rows == 1
    path.touch()  # a new mtime, the same bytes
    again = run_stage(SOURCE_STAGE, config, {}, store)
    assert again.status == "cached" and again.ref.key == first.ref.key and again.stats["read"] == 2
    write_json(path, ALPACA + [{"instruction": "More", "output": "yes"}])
    changed = run_stage(SOURCE_STAGE, config, {}, store)
    assert changed.status == "ran" and changed.ref.key != first.ref.key and changed.ref.rows == 2
    quarantine = store.read_table(companion_key(first.ref.key, "quarantine"))
    assert quarantine.schema.equals(QUARANTINE_SCHEMA)
    assert quarantine.column("reason").to_pylist() == ["empty_assistant"]
    assert store.manifest(first.ref.key)["stats"]["quarantined"] == {"empty_assistant": 1}


def test_merge_concatenates_drops_cross_source_duplicates_and_adds_up(tmp_path, store):
    sources = [SourceConfig(path=str(write_json(tmp_path / "a.json", ALPACA))),
               SourceConfig(path=str(write_jsonl(tmp_path / "g.jsonl", GUANACO)))]
    refs = {f"source_{i:03d}": run_stage(SOURCE_STAGE, s, {}, store).ref for i, s in enumerate(sources)}
    merged = run_stage(MERGE_STAGE, IngestConfig(sources=sources), refs, store)
    stats = merged.stats
    assert stats["read"] == 4 and stats["kept"] == 2 and stats["duplicates"] == 1
    assert stats["duplicates_across_sources"] == 1 and stats["quarantined"] == {"empty_assistant": 1}
    assert stats["read"] == stats["kept"] + sum(stats["quarantined"].values()) + stats["duplicates"]
    table = store.read_table(merged.ref.key)
    assert [s["format"] for s in table.column("source").to_pylist()] == ["alpaca", "guanaco"]
    assert store.read_table(companion_key(merged.ref.key, "quarantine")).num_rows == 1
    assert "| alpaca |" in store.read_file(merged.ref.key, "report.md").decode()
    with pytest.raises(BadInputError, match="no sources"):
        run_stage(MERGE_STAGE, IngestConfig(), {}, store)


def run_cli(*args: str, home) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "SFTFLOW_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "flows", "ingest", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_json_counts_exports_and_errors(tmp_path, shared_data):
    alpaca = shared_data / "llama-factory" / "alpaca_en_demo.json"
    guanaco = write_jsonl(tmp_path / "g.jsonl", GUANACO + [{"text": "### Human: unanswered"}])
    export = tmp_path / "out.jsonl"
    done = run_cli(str(alpaca), str(guanaco), "--export", f"openai:{export}", "--json", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"read", "kept", "quarantined", "duplicates", "repairs", "warnings", "key",
                           "quarantine_key", "exports"}
    assert result["exports"] == [{"format": "openai", "path": str(export), "written": result["kept"], "skipped": {},
                                  "first_ids": {}}]
    assert result["read"] == 999 + 3 and result["quarantined"] == {"no_assistant_turn": 1}
    # the warning threshold is per source: 1 of guanaco's 3 conversations, not 1 of all 1,002
    assert result["repairs"] == {} and len(result["warnings"]) == 1
    assert result["warnings"][0].startswith("g.jsonl: 1 of 3 conversations (33%) quarantined as no_assistant_turn: ")
    assert result["read"] == result["kept"] + 1 + result["duplicates"]
    assert result["quarantine_key"] == f"{result['key']}-quarantine"
    assert len(export.read_text().splitlines()) == result["kept"]
    again = run_cli(str(alpaca), str(guanaco), "--json", home=tmp_path / "home")
    assert json.loads(again.stdout)["key"] == result["key"] and "cached" in again.stderr

    human = run_cli(str(guanaco), home=tmp_path / "home")
    assert "read 3 = kept 2 + quarantined 1 + duplicates 0" in human.stdout and "no_assistant_turn: 1" in human.stdout
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"q": "a"}])
    failed = run_cli(str(odd), home=tmp_path / "home")
    assert failed.returncode == 2 and "--format" in failed.stderr and failed.stdout == ""
    failed = run_cli(str(odd), "--json", home=tmp_path / "home")
    error = json.loads(failed.stdout)
    assert failed.returncode == 2 and error["ok"] is False and "--format" in error["error"]
    assert error["file"] == str(odd) and error["row"] is None
    missing = run_cli(str(tmp_path / "missing.json"), "--json", home=tmp_path / "home")
    assert missing.returncode == 2 and json.loads(missing.stdout) == {
        "ok": False, "error": f"file {tmp_path / 'missing.json'}, field 'ingest.sources': source not found",
        "file": str(tmp_path / "missing.json"), "row": None, "field": "ingest.sources"}
