"""Every file type (JSON, JSONL, CSV, TSV, parquet, gzip), unreadable rows, and export round trips."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.errors import BadInputError
from tasks.exports import INGEST_EXPORTS, parse_spec, write_export
from tests.ingest_helpers import ingest, messages, write_json, write_jsonl

ALPACA = [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
          {"instruction": "Name a color.", "input": "", "output": "Blue."},
          {"instruction": "Name a color.", "input": "", "output": "Blue."}]


def test_the_same_records_from_every_file_type_get_the_same_ids(tmp_path):
    paths = [write_json(tmp_path / "a.json", ALPACA), write_jsonl(tmp_path / "a.jsonl", ALPACA)]
    (tmp_path / "a.csv").write_text("instruction,input,output\n" + "".join(
        f'"{r["instruction"]}","{r["input"]}","{r["output"]}"\n' for r in ALPACA), encoding="utf-8")
    (tmp_path / "a.tsv").write_text("instruction\tinput\toutput\n" + "".join(
        f'{r["instruction"]}\t{r["input"]}\t{r["output"]}\n' for r in ALPACA), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ALPACA), tmp_path / "a.parquet")
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes()))
    (tmp_path / "a.json.gz").write_bytes(gzip.compress((tmp_path / "a.json").read_bytes()))
    paths += [tmp_path / n for n in ("a.csv", "a.tsv", "a.parquet", "a.jsonl.gz", "a.json.gz")]
    results = [ingest(p) for p in paths]
    ids = [r[0].column("id").to_pylist() for r in results]
    assert all(i == ids[0] for i in ids) and len(ids[0]) == 2
    assert all(r[1]["duplicates"] == 1 and r[1]["format"] == "alpaca" for r in results)
    assert messages(results[0][0]) == [("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5")]


def test_jsonl_bad_lines_go_to_quarantine_with_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(ALPACA[0]).encode()
    path.write_bytes(b"\n".join([
        good,
        b'{"instruction": "cut off", "outp',
        '{"instruction": "caf\u00e9", "output": "x"}'.encode("latin-1"),
        b"[1, 2]",
        b"",
        json.dumps({"instruction": "Empty answer", "output": "  "}).encode(),
        json.dumps({"instruction": "", "output": "no question"}).encode(),
        json.dumps({"instruction": ["a list"], "output": "x"}).encode(),
    ]) + b"\n")
    table, stats, quarantine = ingest(path, batch_rows=1)
    assert stats["read"] == 7 and stats["kept"] == 1
    assert stats["quarantined"] == {"malformed_json": 1, "invalid_utf8": 1, "not_an_object": 1,
                                    "empty_assistant": 1, "empty_user": 1, "not_text": 1}
    rows = {r["reason"]: r for r in quarantine.to_pylist()}
    assert rows["malformed_json"]["row"] == 1 and rows["invalid_utf8"]["row"] == 2
    assert rows["empty_assistant"]["row"] == 5 and rows["empty_assistant"]["field"] == "output"
    assert "caf\\xe9" in rows["invalid_utf8"]["excerpt"] and rows["malformed_json"]["excerpt"].startswith('{"instr')
    assert all(r["uri"] == str(path) for r in rows.values())


def test_json_array_in_a_jsonl_file_and_jsonl_in_a_json_file(tmp_path):
    # the seed's converter wrote an indented JSON array into a .jsonl file
    array_in_jsonl = tmp_path / "x.jsonl"
    array_in_jsonl.write_text(json.dumps([{"conversation": [{"input": "q", "output": "a"}]}], indent=4))
    assert ingest(array_in_jsonl)[1]["kept"] == 1
    lines_in_json = write_jsonl(tmp_path / "x.json", ALPACA)
    assert ingest(lines_in_json)[1]["read"] == 3
    single = write_json(tmp_path / "one.json", {"conversation": [{"input": "q", "output": "a"}]})
    assert ingest(single)[1]["format"] == "xtuner"
    wrapped = write_json(tmp_path / "wrapped.json", {"version": 2, "data": ALPACA})
    assert ingest(wrapped)[1]["read"] == 3


def test_csv_invalid_utf8_and_extra_cells(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"instruction,output\nfine,yes\ncaf\xe9,bad bytes\na,b,c\n")
    _, stats, quarantine = ingest(path)
    assert stats["kept"] == 1 and stats["quarantined"] == {"invalid_utf8": 1, "extra_cells": 1}
    assert quarantine.column("row").to_pylist() == [1, 2]


def test_not_json_and_unknown_suffix_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "x", "output": "y"},')
    with pytest.raises(BadInputError, match=r"broken.json.*not valid JSON"):
        ingest(broken)
    odd = tmp_path / "data.txt"
    odd.write_text("hello")
    with pytest.raises(BadInputError, match="cannot tell the file type"):
        ingest(odd)
    with pytest.raises(FileNotFoundError):
        ingest(tmp_path / "missing.jsonl")


def test_large_jsonl_is_streamed_in_batches(tmp_path):
    from tasks.ingest import read_source
    from tasks.stages.ingest_source import SourceConfig

    records = [{"instruction": f"Count to {i}.", "output": " ".join(map(str, range(i % 7 + 1)))} for i in range(2500)]
    reading = read_source(SourceConfig(path=str(write_jsonl(tmp_path / "big.jsonl", records))), batch_rows=1000)
    sizes = [t.num_rows for t in reading.tables]
    assert sizes == [1000, 1000, 500] and reading.stats["kept"] == 2500


@pytest.mark.parametrize("fmt", [f for f in INGEST_EXPORTS if f != "canonical"])
def test_export_round_trip_gives_the_same_ids(tmp_path, shared_data, fmt):
    table, _, _ = ingest(shared_data / "llama-factory" / "alpaca_en_demo.json")
    multi = ingest(write_jsonl(tmp_path / "multi.jsonl", [{"conversations": [
        {"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "How are you?"}, {"from": "gpt", "value": "Fine."}]}]))[0]
    source = pa.concat_tables([table, multi])
    suffix = "json" if fmt in ("alpaca", "sharegpt") else "jsonl"
    path = tmp_path / f"out.{suffix}"
    assert write_export(source.to_batches(max_chunksize=300), fmt, str(path)).written == source.num_rows
    again, stats, _ = ingest(path)
    assert stats["format"] == fmt and again.column("id").to_pylist() == source.column("id").to_pylist()
    if fmt == "alpaca":  # instruction and input are split back, so CaR's text is the same
        assert again.column("meta").to_pylist()[:table.num_rows] == table.column("meta").to_pylist()


def test_exports_are_real_json_lines_and_arrays(tmp_path):
    table = ingest(write_json(tmp_path / "a.json", ALPACA))[0]
    write_export([table], "xtuner", str(tmp_path / "x.jsonl"))
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines][0] == {"conversation": [
        {"input": "Add the numbers.\n\n2 and 3", "output": "5"}]}
    write_export([table], "alpaca", str(tmp_path / "a.json.gz"))
    assert json.loads(gzip.decompress((tmp_path / "a.json.gz").read_bytes()))[0] == {
        "instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    with pytest.raises(BadInputError, match="FORMAT:PATH"):
        parse_spec("yaml:/tmp/x")


def test_id_set_agrees_with_a_python_set():
    import hashlib
    import random

    from tasks.ingest.dedupe import IdSet

    rng = random.Random(0)
    pool = [hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(3000)]
    pool += ["00" * 16, "00" * 15 + "01", "01" + "00" * 15]  # trailing zero bytes must stay distinct
    ids, seen = IdSet(), set()
    for _ in range(200):
        batch = [rng.choice(pool) for _ in range(rng.randint(0, 50))]
        expected = []
        for record_id in batch:
            expected.append(record_id not in seen)
            seen.add(record_id)
        assert ids.add_new(batch).tolist() == expected
    assert len(ids) == len(seen) and len(ids.runs) <= 12
