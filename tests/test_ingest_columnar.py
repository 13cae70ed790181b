"""The column-wise paths (columns.py, columnar.py) give exactly the records of the row-by-row ones."""
from __future__ import annotations

import gc
import json
import random
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import make_record, meta_json, record_id, records_to_table
from tasks.ingest import source
from tasks.ingest.arrow import floats, mask, numbers, repeated, strings
from tasks.ingest.columns import RecordColumns
from tasks.ingest.dedupe import id_keys
from tasks.ingest.turns import Conversation
from tests.conftest import ROOT
from tests.ingest_helpers import ingest, write_json, write_jsonl

# plain rows and every kind the chunk parser leaves to the row parsers, with duplicates across both kinds
MIXED = [
    {"instruction": "Add.", "input": 5, "output": "5"},  # a number: row by row
    {"instruction": "Add.", "input": "5", "output": "5"},  # plain, the same record as row 0: a duplicate
    {"instruction": " Cafe\u0301\r\nline ", "input": None, "output": "ok\r", "system": "Be brief."},
    {"instruction": "Hi", "output": "  "},  # empty answer: quarantined
    {"instruction": "\t", "output": "x"},  # empty instruction: quarantined
    {"instruction": "Q", "output": "A", "history": [["h1", "a1"]], "system": ""},  # a history: row by row
    {"instruction": "Q", "output": ["A"]},  # not text: quarantined
    {"instruction": "Q2", "output": "A2", "history": [], "extra": {"k": 1}, "id": 7},
    {"instruction": "Q", "output": "A", "system": 3},
    {"instruction": "Add.", "input": "5", "output": "5"},  # a duplicate of rows 0 and 1
    {"instruction": "Sum", "input": " 1\r\n2 ", "output": "3"},  # the input normalized in meta too
]


def _row_by_row(monkeypatch: pytest.MonkeyPatch, path, **config):
    with monkeypatch.context() as patched:
        patched.setattr(source, "CHUNK_PARSERS", {})
        return ingest(path, **config)


def _same(fast, slow) -> None:
    assert fast[0].equals(slow[0]), "records differ"
    assert fast[1] == slow[1], "counts differ"
    assert fast[2].equals(slow[2]), "quarantine differs"


@pytest.mark.parametrize("batch_rows", [3, 20_000])
def test_mixed_rows_in_chunks_match_row_by_row(tmp_path, monkeypatch, batch_rows):
    path = write_json(tmp_path / "mixed.json", MIXED)
    fast = ingest(path, batch_rows=batch_rows)
    _same(fast, _row_by_row(monkeypatch, path, batch_rows=batch_rows))
    assert [s["row"] for s in fast[0].column("source").to_pylist()] == [0, 2, 5, 7, 8, 10]
    assert fast[1]["duplicates"] == 2 and fast[1]["quarantined"] == {"empty_assistant": 1, "empty_user": 1,
                                                                       "not_text": 1}


def test_jsonl_with_blank_and_bad_lines_in_chunks_matches_row_by_row(tmp_path, monkeypatch):
    lines = [json.dumps(record).encode() for record in MIXED * 3]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines[:4] + [b"", b"{not json", b"[1, 2]", b"\xff\xfe{}", b"  "] + lines[4:]) + b"\n")
    fast = ingest(path, batch_rows=4)
    _same(fast, _row_by_row(monkeypatch, path, batch_rows=4))
    assert {"malformed_json", "not_an_object", "invalid_utf8"} <= set(fast[1]["quarantined"])
    assert fast[0].column("source").to_pylist()[2]["row"] == 10  # blank lines count in the line numbers


@pytest.mark.parametrize(("name", "config"), [
    ("llama-factory/alpaca_en_demo.json", {}),
    ("car/CaR_selected_result.json", {}),
    ("alpaca/seed_tasks.jsonl", {}),
    ("car/APE_score_valid.csv", {"mapping": {"input": "src", "output": "score"}}),
])
def test_real_files_match_row_by_row(shared_data, monkeypatch, name, config):
    fast = ingest(shared_data / name, batch_rows=400, **config)
    _same(fast, _row_by_row(monkeypatch, shared_data / name, batch_rows=400, **config))
    assert fast[0].num_rows > 150


# text that normalization, stripping and JSON escaping treat specially, mixed with plain ASCII
TRICKY = ["Caf\u00e9", "Cafe\u0301", "\u65e5\u672c", "\r\n", "\r", "\t", "\n", "\x1c", "\x1f", "\u00a0", "\u2028",
          "\u0085", "\u3000", '"q"', "\\", "\x00", "\x7f", " ", "ok", "word", "\u200b", "\ufeff", "\x0b", "\U0001f600",
          "</p>", "/"]


def _tricky_records(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text() -> str:
        return "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 6)))

    records = []
    for i in range(count):
        record = {"instruction": text() or f"q{i}", "output": text() or f"a{i}"}
        if rng.random() < 0.5:
            record["input"] = rng.choice([text(), None, 3, ""])
        if rng.random() < 0.15:
            record["system"] = text()
        if rng.random() < 0.15:
            record[rng.choice(["extra", "id", "category"])] = rng.choice([text(), 1, 2.5, None, [1, "x"], {"b": 1}])
        if rng.random() < 0.05:
            record["history"] = [[text(), text()]]
        records.append(record)
    return records + records[:50]  # duplicates


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_tricky_text_in_chunks_matches_row_by_row(tmp_path, monkeypatch, suffix):
    records = _tricky_records(600)
    path = (write_json if suffix == ".json" else write_jsonl)(tmp_path / f"tricky{suffix}", records)
    fast = ingest(path, batch_rows=97)
    _same(fast, _row_by_row(monkeypatch, path, batch_rows=97))
    assert fast[1]["duplicates"] > 30 and fast[1]["quarantined"] and fast[0].num_rows > 300


def test_ingest_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    path = write_json(tmp_path / "mixed.json", MIXED)
    ingest(path, batch_rows=3)
    assert gc.isenabled()
    gc.disable()
    try:
        ingest(path, batch_rows=3)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_demo_data_matches_row_by_row(tmp_path, monkeypatch):
    subprocess.run([sys.executable, str(ROOT / "demo" / "build_data.py"), str(tmp_path)], check=True, timeout=60,
                   capture_output=True)
    for name in ("medicationqa_demo.xlsx", "guanaco_demo.jsonl", "alpaca_demo.json"):
        _same(ingest(tmp_path / name, batch_rows=7), _row_by_row(monkeypatch, tmp_path / name, batch_rows=7))


def test_record_columns_equal_make_record():
    call = {"id": "c1", "name": "area", "arguments": '{"r": 2}'}
    conversations = [
        (4, " Sys\r\n ", [{"role": "user", "content": "Cafe\u0301 "}, {"role": "assistant", "content": "a"}], {"k": 1},
         None),
        (2, None, [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "loss_weight": 0.0},
                   {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}], None, None),
        (5, None, [{"role": "user", "content": "area?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
                   {"role": "tool", "content": "12.6", "tool_call_id": "c1"}, {"role": "assistant", "content": "12.6"}],
         None, [{"name": "area", "parameters": {}}]),
        (3, "  ", [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], {"z": [1]}, None),
    ]
    columns = RecordColumns("file.json", "alpaca", "train")
    for row, system, turns, meta, tools in conversations:
        columns.add(row, Conversation(turns, system, meta or {}, tools))
    columns.add_pairs([1], ["S"], [" q "], ["r"], [meta_json({"instruction": "q"})])
    expected = [make_record(messages=turns, system=system, uri="file.json", fmt="alpaca", row=row, split="train",
                            meta=meta, tools=tools) for row, system, turns, meta, tools in conversations]
    expected.append(make_record(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}],
                                system="S", uri="file.json", fmt="alpaca", row=1, split="train",
                                meta={"instruction": "q"}))
    expected.sort(key=lambda record: record["source"]["row"])  # the table comes in source row order
    assert columns.table().equals(records_to_table(expected))
    plain = RecordColumns("file.json", "alpaca", "train")
    plain.add(4, Conversation(conversations[0][2], conversations[0][1]))
    assert plain.table().column("messages")[0].as_py()[1] == {"role": "assistant", "content": "a", "tool_calls": None,
                                                             "tool_call_id": None, "loss_weight": None}


def test_arrays_from_buffers_equal_pa_array():
    texts = ["a", None, "", "Café ☕", "x" * 1000, None]
    assert strings(texts).equals(pa.array(texts, pa.string()))
    assert strings([]).equals(pa.array([], pa.string()))
    for values in (["plain", "", "ascii text"], [None, "x", None], [None, None], ["\u00e9", None, "a"]):
        assert strings(values).equals(pa.array(values, pa.string()))
    for value, count in (("file.json", 3), ("Caf\u00e9", 2), ("", 2), (None, 4), ("x", 0)):
        assert repeated(value, count).equals(pa.array([value] * count, pa.string()))
    assert numbers([3, 0, 2**40]).equals(pa.array([3, 0, 2**40], pa.int64()))
    for values in ([0.0, None, 1.5], [None, None], [], [2.0]):
        assert floats(values).equals(pa.array(values, pa.float64()))
    flags = np.array([True, False, True] * 5)
    assert mask(flags).equals(pa.array(flags.tolist(), pa.bool_()))


def test_id_keys_from_an_arrow_column_equal_the_hex_digits():
    ids = [record_id(None, [{"role": "user", "content": str(i)}]) for i in range(50)]
    expected = np.array([bytes.fromhex(i) for i in ids], dtype="S16")
    column = pa.chunked_array([pa.array(ids[:20]), pa.array(ids[20:])])
    assert (id_keys(column) == expected).all() and (id_keys(pa.array(ids).slice(5, 10)) == expected[5:15]).all()
    assert (id_keys(pa.array(["AB" * 16])) == np.array([bytes.fromhex("AB" * 16)], dtype="S16")).all()
