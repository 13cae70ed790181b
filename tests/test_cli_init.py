"""`sftflow init`: a commented pipeline YAML for the user's files that `load_config` (and so `sftflow run`) takes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from openpyxl import Workbook

from flows.cli.init import sized_defaults
from flows.config import load_config
from tests.conftest import ROOT


def sftflow(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    # from the project root, so this checkout's code is imported whatever the folder the YAML goes to
    return subprocess.run([sys.executable, "-m", "flows", "init", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("init") / "data"
    done = subprocess.run([sys.executable, str(ROOT / "demo" / "build_data.py"), str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder


def test_init_on_the_demo_files_writes_a_config_that_loads(demo_data):
    out = demo_data.parent / "pipeline.yaml"
    files = [demo_data / "medicationqa_demo.xlsx", demo_data / "guanaco_demo.jsonl", demo_data / "alpaca_demo.json"]
    done = sftflow(*map(str, files), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    detected = [(s["format"], s["sheet"], s["read"], s["kept"], s["duplicates"]) for s in result["sources"]]
    assert detected == [("medicationqa", "DrugQA", 32, 30, 1), ("guanaco", None, 16, 15, 0),
                        ("alpaca", None, 31, 30, 0)]
    assert result["defaults"] == {"rows": 75, "k": 6, "n1": 20, "budget": 26, "max_steps": 7}

    text = out.read_text()
    assert '- path: "data/medicationqa_demo.xlsx"' in text  # beside the YAML: relative, they move together
    assert "# 32 read: 30 kept, 1 quarantined (empty_assistant 1), 1 duplicate" in text
    assert "int(sqrt(rows / 2)) = 6 clusters" in text and "# budget: 26" in text
    config = load_config(out)
    assert [(s.path, s.format, s.sheet) for s in config.ingest.sources] == [
        (str(files[0]), "medicationqa", "DrugQA"), (str(files[1]), "guanaco", None), (str(files[2]), "alpaca", None)]
    assert (config.name, config.iqs.scorer, config.cluster.k) == ("medicationqa_demo", "none", None)
    assert (config.select.n1, config.select.n2, config.select.budget, config.train.max_steps) == (20, 1, None, 7)

    again = sftflow(str(files[2]), "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr and out.read_text() == text  # left as it was
    revisions = ROOT / "demo" / "revisions_demo.jsonl"
    forced = sftflow(str(files[2]), "--out", str(out), "--force", "--revisions", str(revisions), "--name", "solo")
    assert forced.returncode == 0, forced.stderr
    assert "wrote " in forced.stdout and f"sftflow run {out}" in forced.stdout
    config = load_config(out)
    assert (config.name, config.iqs.scorer, config.iqs.revisions) == (
        "solo", "comet", [str(revisions)])


def test_the_data_sheet_is_found_behind_a_notes_sheet(tmp_path):
    workbook = Workbook()
    workbook.active.title = "Notes"
    workbook.active.append(["exported from the review tool"])
    sheet = workbook.create_sheet("train")
    sheet.append(["Reviewed instructions, 2026"])
    sheet.append(["instruction", "input", "output"])
    sheet.append(["Name a colour.", "", "Blue."])
    sheet.append(["Add the numbers.", "2 and 3", "5"])
    workbook.save(tmp_path / "reviewed.xlsx")
    done = sftflow(str(tmp_path / "reviewed.xlsx"), "--out", str(tmp_path / "p.yaml"), "--json")
    assert done.returncode == 0, done.stderr
    (source,) = json.loads(done.stdout)["sources"]
    assert (source["format"], source["sheet"], source["header_row"], source["kept"]) == ("alpaca", "train", 1, 2)
    assert "header in Excel row 2; other sheets: Notes" in (tmp_path / "p.yaml").read_text()
    assert load_config(tmp_path / "p.yaml").ingest.sources[0].sheet == "train"


def test_bad_sources_stop_before_anything_is_written(tmp_path):
    missing = sftflow(str(tmp_path / "nope.json"), "--out", str(tmp_path / "p.yaml"))
    assert missing.returncode == 2 and "no such source file" in missing.stderr
    (tmp_path / "odd.json").write_text(json.dumps([{"question": "q", "reply": "r"}]))
    odd = sftflow(str(tmp_path / "odd.json"), "--out", str(tmp_path / "p.yaml"), "--json")
    assert odd.returncode == 2 and "cannot tell the format" in json.loads(odd.stdout)["error"]
    assert not (tmp_path / "p.yaml").exists() and list(tmp_path.glob(".*draft")) == []


@pytest.mark.parametrize("rows, n1, k", [(5, 5, 1), (75, 20, 6), (10_000, 200, 70), (52_002, 1000, 161)])
def test_defaults_follow_the_row_count(rows, n1, k):
    sizes = sized_defaults(rows)
    assert (sizes["n1"], sizes["k"]) == (n1, k) and sizes["budget"] == min(rows, n1 + k)
