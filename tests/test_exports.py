"""tasks/exports.py, the one export module: every format's output for plain, tool-calling and loss-weighted
records, what each leaves out (with the first ids), the layouts and table formats, and the callers (format stage,
ingest --export, self-instruct; `sftflow export` in test_export.py)."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from storage.schema import make_record, records_to_table
from tasks import exports
from tasks.errors import BadInputError
from tasks.text import alpaca_user_content

TOOLS = [{"name": "lookup", "description": "Look a word up", "parameters": {"type": "object"}}]
CALL = {"id": "c1", "name": "lookup", "arguments": '{"q": "owl"}'}


def record(messages, system=None, meta=None, tools=None, row=0):
    return make_record(messages=messages, system=system, uri="u", fmt="f", row=row, meta=meta, tools=tools)


ALPACA = record([{"role": "user", "content": alpaca_user_content("Add.", "2 and 3")},
                 {"role": "assistant", "content": "5"}], meta={"instruction": "Add.", "input": "2 and 3"})
MULTI = record([{"role": "user", "content": "Hi"}, {"role": "user", "content": "Anyone?"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Bye!"}, {"role": "user", "content": "unanswered"}], system="Be kind.")
CALLING = record([{"role": "user", "content": "Owl?"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                  {"role": "tool", "content": "a bird", "tool_call_id": "c1"},
                  {"role": "assistant", "content": "A bird."}], tools=TOOLS)
TALKING_CALL = record([{"role": "user", "content": "Owl?"},
                       {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]},
                       {"role": "tool", "content": "a bird"}, {"role": "assistant", "content": "A bird."}], tools=TOOLS)
SILENT = record([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5", "loss_weight": 0.0},
                 {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "4"}])
RECORDS = [ALPACA, MULTI, CALLING, TALKING_CALL, SILENT]


def converted(fmt: str, **options) -> tuple[list[dict], exports.Exported]:
    data, done = exports.export_bytes(RECORDS, fmt, exports.Options(**options))
    layout = exports.CONVERTERS[fmt][1]
    rows = json.loads(data) if layout == "json" else [json.loads(line) for line in data.decode().splitlines()]
    return rows, done


def test_alpaca():
    rows, done = converted("alpaca")
    assert done.skipped == {"loss_weight": 1, "tools": 2} and done.written == 2
    assert rows[0] == {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    # consecutive user turns become one prompt; the trailing unanswered turn is left out
    assert rows[1] == {"instruction": "Bye", "input": "", "output": "Bye!", "system": "Be kind.",
                       "history": [["Hi\n\nAnyone?", "Hello"]]}


def test_xtuner_holds_loss_weights_not_tools():
    rows, done = converted("xtuner")
    assert done.skipped == {"tools": 2} and done.written == 3
    assert rows[1] == {"conversation": [{"system": "Be kind.", "input": "Hi\n\nAnyone?", "output": "Hello"},
                                        {"input": "Bye", "output": "Bye!"}]}
    assert rows[2] == {"conversation": [{"input": "2+2?", "output": "5", "output_with_loss": False},
                                        {"input": "Again?", "output": "4"}]}
    rows, _ = converted("xtuner", system="Override.", ids=True)
    assert rows[0]["id"] == ALPACA["id"] and rows[0]["conversation"][0]["system"] == "Override."


def test_sharegpt_holds_tool_calls_as_function_call_turns():
    rows, done = converted("sharegpt")
    assert done.skipped == {"loss_weight": 1, "tool_call_with_text": 1} and done.written == 3
    assert rows[1]["conversations"][:2] == [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"}]
    assert rows[1]["conversations"][-1] == {"from": "gpt", "value": "Bye!"}
    assert rows[2] == {"conversations": [
        {"from": "human", "value": "Owl?"},
        {"from": "function_call", "value": '{"name": "lookup", "arguments": {"q": "owl"}}'},
        {"from": "observation", "value": "a bird"}, {"from": "gpt", "value": "A bird."}],
        "tools": json.dumps(TOOLS)}


def test_openai_holds_everything():
    rows, done = converted("openai")
    assert done.skipped == {} and done.written == 5
    assert rows[1]["messages"][0] == {"role": "system", "content": "Be kind."}
    assert rows[2] == {"messages": [
        {"role": "user", "content": "Owl?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"owl"}'}}]},
        {"role": "tool", "content": "a bird", "tool_call_id": "c1"}, {"role": "assistant", "content": "A bird."}],
        "tools": [{"type": "function", "function": TOOLS[0]}]}
    assert rows[3]["messages"][1]["content"] == "Checking."
    assert rows[4]["messages"][1] == {"role": "assistant", "content": "5", "weight": 0}


def test_llamafactory_folder_names_the_tool_tags_and_the_tools_column():
    files, done = exports.llamafactory_files(RECORDS, "mine")
    assert done.skipped == {"loss_weight": 1, "tool_call_with_text": 1}
    info = json.loads(files["dataset_info.json"])["mine"]
    assert info["formatting"] == "sharegpt" and info["columns"] == {"messages": "messages", "system": "system",
                                                                    "tools": "tools"}
    assert info["tags"]["function_tag"] == "function_call" and info["tags"]["observation_tag"] == "tool"
    data = json.loads(files["data.json"])
    assert [m["role"] for m in data[2]["messages"]] == ["user", "function_call", "tool", "assistant"]
    assert data[2]["id"] == CALLING["id"] and json.loads(data[2]["tools"]) == TOOLS
    files, _ = exports.llamafactory_files([ALPACA], "mine")  # no record has tools: no tools column
    assert "tools" not in json.loads(files["dataset_info.json"])["mine"]["columns"]


def test_text_layouts_and_files(tmp_path):
    data, done = exports.export_bytes([{"id": "a", "text": "T"}], "text", exports.Options(ids=True))
    assert data == b'{"id":"a","text":"T"}\n' and done.written == 1
    table = records_to_table(RECORDS)
    done = exports.write_export(table.to_batches(max_chunksize=2), "alpaca", str(tmp_path / "a.json.gz"))
    assert json.loads(gzip.decompress((tmp_path / "a.json.gz").read_bytes()))[0]["instruction"] == "Add."
    assert done.summary("alpaca") == (f"2 records as alpaca; left out 1 (loss_weight: {SILENT['id']}), "
                                      f"2 (tools: {CALLING['id']}, {TALKING_CALL['id']})")
    exports.write_export([table], "alpaca", str(tmp_path / "a.jsonl"), layout="jsonl")
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2
    assert exports.write_export([table], "canonical", str(tmp_path / "c.parquet")).written == 5
    assert pq.read_table(tmp_path / "c.parquet").equals(table)
    with pytest.raises(BadInputError, match="FORMAT:PATH"):
        exports.parse_spec("yaml:/tmp/x")
    assert exports.parse_spec("openai:s3://b/x.jsonl") == ("openai", "s3://b/x.jsonl")


def test_alpaca_refuses_multi_turn_records_unless_history_is_asked_for():
    rows, done = converted("alpaca", history=False)
    assert done.written == 1 and rows == [{"instruction": "Add.", "input": "2 and 3", "output": "5"}]
    assert done.skipped == {"multi_turn": 1, "loss_weight": 1, "tools": 2}
    assert done.first_ids["multi_turn"] == [MULTI["id"]]


def test_first_ids_are_kept_per_reason_up_to_a_limit():
    many = [record([{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A"}], tools=TOOLS)
            for i in range(exports.FIRST_IDS + 2)]
    _, done = exports.export_bytes(many, "xtuner")
    assert done.skipped == {"tools": len(many)} and done.first_ids == {"tools": [r["id"] for r in many[:5]]}
    assert done.left_out().endswith(", …)")


def test_the_table_formats_hold_the_openai_records_with_only_the_fields_they_use():
    table, done = exports.messages_table([ALPACA, MULTI])
    message = table.schema.field("messages").type.value_type
    assert table.column_names == ["messages"] and [f.name for f in message] == ["role", "content"]
    assert table.to_pylist()[1]["messages"][0] == {"role": "system", "content": "Be kind."}
    table, done = exports.messages_table(RECORDS, exports.Options(lineage=True))
    assert done.written == 5 and table.column_names == [*exports.LINEAGE_TYPES, "messages", "tools"]
    message = table.schema.field("messages").type.value_type
    assert [f.name for f in message] == ["role", "content", "tool_calls", "tool_call_id", "weight"]
    rows = table.to_pylist()
    assert rows[2]["source_uri"] == "u" and rows[2]["source_row"] == 0 and rows[2]["reason"] is None
    assert json.loads(rows[2]["tools"]) == [{"type": "function", "function": TOOLS[0]}] and rows[0]["tools"] is None
    assert rows[2]["messages"][1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q":"owl"}'}
    assert rows[4]["messages"][1]["weight"] == 0


def test_self_instruct_output_goes_through_the_same_writer(tmp_path):
    from tasks.self_instruct.records import export

    table = records_to_table([ALPACA])
    assert export(table, tmp_path / "out" / "g.jsonl") == "alpaca"
    assert json.loads((tmp_path / "out" / "g.jsonl").read_text()) == {"instruction": "Add.", "input": "2 and 3",
                                                                     "output": "5"}
    assert export(table, tmp_path / "g.parquet") == "canonical"
    assert pq.read_table(tmp_path / "g.parquet").equals(table)
