"""The demo data (demo/build_data.py) and demo/pipeline.yaml: what `make demo` ingests."""
from __future__ import annotations

import subprocess
import sys

from flows.config import load_config
from tests.conftest import ROOT
from tests.ingest_helpers import ingest


def test_demo_data_builds_and_ingests(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "demo" / "build_data.py"), str(tmp_path)], check=True, timeout=60)
    xlsx, xstats, xq = ingest(tmp_path / "medicationqa_demo.xlsx")
    assert xstats["format"] == "medicationqa" and xstats["split"] == "DrugQA"
    assert (xstats["kept"], xstats["duplicates"], xstats["quarantined"]) == (30, 1, {"empty_assistant": 1})
    guanaco, gstats, _ = ingest(tmp_path / "guanaco_demo.jsonl")
    assert gstats["format"] == "guanaco" and gstats["kept"] == 15 and gstats["quarantined"] == {"no_assistant_turn": 1}
    assert max(len(m) for m in guanaco.column("messages").to_pylist()) >= 6, "multi-turn records"
    alpaca, astats, _ = ingest(tmp_path / "alpaca_demo.json")
    assert astats["format"] == "alpaca" and astats["kept"] == 30
    assert sum(1 for r in alpaca.column("messages").to_pylist() if "\n\n" in r[0]["content"]) >= 10, "with input"


def test_demo_pipeline_config_lists_the_three_sources():
    config = load_config(ROOT / "demo" / "pipeline.yaml")
    assert config.name == "demo"
    assert [s.path for s in config.ingest.sources] == [str(ROOT / "demo" / "data" / name) for name in
                                                       ("medicationqa_demo.xlsx", "guanaco_demo.jsonl",
                                                        "alpaca_demo.json")]
