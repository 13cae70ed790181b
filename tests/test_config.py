"""The pipeline config: shorthand sources, paths relative to the YAML, and bad configs as clear bad-input errors."""
from __future__ import annotations

import json

import pytest

from flows.cli import main
from flows.config import load_config
from tasks.errors import BadInputError


def test_plain_path_sources_and_relative_paths_resolved_against_the_yaml_folder(tmp_path):
    (tmp_path / "conf").mkdir()
    config_file = tmp_path / "conf" / "pipeline.yaml"
    config_file.write_text("ingest:\n  sources:\n    - data/a.json\n    - {path: b.xlsx, sheet: DrugQA}\n"
                           "    - hf:tatsu-lab/alpaca\niqs:\n  revisions: [r.csv, /abs/r.csv]\n")
    config = load_config(config_file)
    assert config.iqs.revisions == [str(tmp_path / "conf" / "r.csv"), "/abs/r.csv"]
    sources = config.ingest.sources
    assert [s.path for s in sources] == [str(tmp_path / "conf" / "data" / "a.json"), str(tmp_path / "conf" / "b.xlsx"),
                                         "hf:tatsu-lab/alpaca"]
    assert sources[1].sheet == "DrugQA"
    overridden = load_config(config_file, ["ingest.sources=[/data/c.jsonl]"]).ingest.sources
    assert [s.path for s in overridden] == ["/data/c.jsonl"]


@pytest.mark.parametrize(("text", "overrides", "message", "field"), [
    ("select:\n  n1: -3\n", [], r"field 'select\.n1': Input should be greater than or equal to 0 \(got -3\)",
     "select.n1"),
    ("selct:\n  n1: 3\n", [], r"field 'selct': Extra inputs are not permitted", "selct"),
    ("select:\n  n1: -3\n  n2: x\n", [], r"select\.n1: Input should be .*; select\.n2: Input should be", None),
    ("ingest: [oops\n", [], "not valid YAML", None),
    ("- a\n- b\n", [], "expected sections", None),
    ("iqs:\n  revisions: r.csv\n", [], "field 'iqs.revisions': Input should be a valid list", "iqs.revisions"),
    ("", ["select.n1"], "--set expects key=value", "--set"),
])
def test_bad_configs_name_the_file_and_the_field(tmp_path, text, overrides, message, field):
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(text)
    with pytest.raises(BadInputError, match=message) as caught:
        load_config(config_file, overrides)
    assert caught.value.field == field
    assert caught.value.file == (None if overrides else str(config_file))


def test_the_cli_reports_a_bad_config_as_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTFLOW_HOME", str(tmp_path / "home"))
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text("select:\n  n1: -3\n")
    assert main(["run", str(config_file), "--json"]) == 2
    out, err = capsys.readouterr()
    error = json.loads(out)
    assert error["ok"] is False and error["field"] == "select.n1" and error["file"] == str(config_file)
    assert "bad input" in err and "Traceback" not in err


def test_an_unknown_from_stage_stops_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTFLOW_HOME", str(tmp_path / "home"))
    assert main(["run", "--from", "bogus", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["field"] == "--from bogus" and "ingest, embed" in error["error"]
    assert not (tmp_path / "home" / "store").exists()


def test_a_missing_source_is_one_line_of_bad_input_before_the_flow_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTFLOW_HOME", str(tmp_path / "home"))
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text("ingest:\n  sources: [gone.jsonl]\niqs:\n  scorer: none\n")
    assert main(["run", str(config_file), "--json"]) == 2
    out, err = capsys.readouterr()
    error = json.loads(out)
    assert error["file"] == str(tmp_path / "gone.jsonl") and error["field"] == "ingest.sources"
    assert err.strip().splitlines() == [f"sftflow run: bad input: {error['error']}"]  # one line, no traceback
    assert not (tmp_path / "home" / "store").exists()  # nothing ran
