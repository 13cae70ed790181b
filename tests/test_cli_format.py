"""`sftflow templates …` and `sftflow format …` through the real CLI (one JSON object on stdout)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from storage.schema import make_record, records_to_table
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # each call starts a Python with transformers (about 5-10 s here)


def cli(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "flows", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_templates_list_and_render(tmp_path, tiny_lm):
    names = [t["name"] for t in cli("templates", "list")["templates"]]
    assert "alpaca" in names and "tokenizer" in names
    conversation = tmp_path / "conv.json"
    conversation.write_text(json.dumps({
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                     {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}))
    out = cli("templates", "render", "chatml", "--input", str(conversation), "--tokenizer", str(tiny_lm))
    assert out["text"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                           "<|im_start|>assistant\nCiao<|im_end|>\n")
    assert out["supervised"] == ["Hello<|im_end|>", "Ciao<|im_end|>"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"messages": [{"role": "system", "content": "x"}]}))
    proc = subprocess.run([sys.executable, "-m", "flows", "templates", "render", "alpaca", "--input", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "row 0" in proc.stderr and "'role'" in proc.stderr


def test_format_command(tmp_path, tiny_lm, store):
    records = [make_record(messages=[{"role": "user", "content": f"question {i}"},
                                     {"role": "assistant", "content": f"answer {i}"}], system=None, uri="x.jsonl",
                           fmt="sharegpt", row=i) for i in range(5)]
    store.publish_table("selection-cli", "select", records_to_table(records))
    out_dir = tmp_path / "exports"
    result = cli("format", "selection-cli", "--base-model", str(tiny_lm), "--store", store.url, "--template",
                 "vicuna", "--export", "text,llamafactory", "--out", str(out_dir))
    assert result["status"] == "ran" and result["stats"]["rows_out"] == 5
    assert result["stats"]["template"] == "vicuna"
    lines = (out_dir / "text.jsonl").read_text().splitlines()
    assert len(lines) == 5 and "USER: question 0 ASSISTANT: answer 0" in json.loads(lines[0])["text"]
    assert json.loads((out_dir / "llamafactory" / "dataset_info.json").read_text())["sftflow"]["formatting"]
    assert (out_dir / "chat_template.jinja").read_text().startswith("{%-")
    assert not Path(out_dir / "xtuner.jsonl").exists()
