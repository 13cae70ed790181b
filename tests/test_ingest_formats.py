"""Format parsers and auto-detection, on real data where we have it and small records written here."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from tasks.errors import BadInputError
from tasks.ingest.formats import MEDICATIONQA_SYSTEM
from tasks.text import car_text
from tests.ingest_helpers import ingest, messages, write_json, write_jsonl


def seed_guanaco_text(shared_data) -> str:
    seed = (shared_data.parent / "seeds" / "000_e0a9a701c244cb94.txt").read_text(encoding="utf-8")
    line = next(line for line in seed.splitlines() if line.startswith("### Human: Can you explain contrastive"))
    return line.strip()


def test_alpaca_real_file(shared_data):
    table, stats, quarantine = ingest(shared_data / "llama-factory" / "alpaca_en_demo.json")
    raw = json.loads((shared_data / "llama-factory" / "alpaca_en_demo.json").read_text())
    assert stats["format"] == "alpaca" and stats["read"] == len(raw) == 999
    distinct = {(r["instruction"].strip(), r["input"].strip(), r["output"].strip()) for r in raw}
    assert stats["kept"] == len(distinct) and stats["duplicates"] == 999 - len(distinct)
    assert quarantine.num_rows == 0
    rows = table.to_pylist()
    with_input = next(r for r in rows if json.loads(r["meta"])["input"])
    meta = json.loads(with_input["meta"])
    assert with_input["messages"][0]["content"] == f"{meta['instruction']}\n\n{meta['input']}"
    assert car_text(with_input["messages"], with_input["meta"]).startswith(
        f"Instruction: {meta['instruction']} Input: {meta['input']} Response: ")
    assert all(r["source"]["format"] == "alpaca" for r in rows)
    assert len({r["source"]["row"] for r in rows}) == len(rows)


def test_self_instruct_seed_tasks_one_record_per_instance(shared_data):
    path = shared_data / "alpaca" / "seed_tasks.jsonl"
    tasks = [json.loads(line) for line in path.read_text().splitlines()]
    table, stats, _ = ingest(path)
    assert len(tasks) == 175 and stats["format"] == "self-instruct"
    assert stats["read"] == sum(len(t["instances"]) for t in tasks)
    first = json.loads(table.column("meta")[0].as_py())
    assert first["id"] == tasks[0]["id"] and first["instance"] == 0 and "is_classification" in first


def test_guanaco_seed_record_without_space_before_assistant(shared_data, tmp_path):
    text = seed_guanaco_text(shared_data)
    assert "details.### Assistant:" not in text and re.search(r"\S### Assistant:", text)
    table, stats, _ = ingest(write_jsonl(tmp_path / "g.jsonl", [{"text": text}]))
    turns = messages(table)
    assert stats["format"] == "guanaco" and [r for r, _ in turns] == ["user", "assistant"] * 2
    assert turns[0][1].startswith("Can you explain contrastive learning") and turns[0][1].endswith("field of ML?")
    assert turns[1][1].startswith("Sure! Let's say") and "###" not in turns[1][1]
    assert turns[2][1].startswith("I didn't understand how pulling")


def test_guanaco_quarantine_reasons(tmp_path):
    records = [{"text": "### Human: only a question"}, {"text": "no markers at all"},
               {"text": "### Human: hi### Assistant: hello"}]
    _, stats, quarantine = ingest(write_jsonl(tmp_path / "g.jsonl", records), format="guanaco")
    assert stats["quarantined"] == {"no_assistant_turn": 1, "no_turn_markers": 1} and stats["kept"] == 1
    assert quarantine.column("row").to_pylist() == [0, 1]


def test_sharegpt_openai_xtuner_and_their_system_prompts(tmp_path):
    sharegpt = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye?"}],
                 "id": "x1"}]
    openai = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]}]
    xtuner = [{"conversation": [{"system": "Be brief.", "input": "Hi", "output": "Hello"}]}]
    ids = []
    for name, records in (("sharegpt", sharegpt), ("openai", openai), ("xtuner", xtuner)):
        table, stats, _ = ingest(write_jsonl(tmp_path / f"{name}.jsonl", records))
        assert stats["format"] == name
        assert table.column("system").to_pylist() == ["Be brief."]
        assert messages(table) == [("user", "Hi"), ("assistant", "Hello")]
        ids.append(table.column("id")[0].as_py())
    assert len(set(ids)) == 1, "the same conversation gets the same id from every format"
    meta = json.loads(ingest(tmp_path / "sharegpt.jsonl")[0].column("meta")[0].as_py())
    assert meta == {"id": "x1", "trailing_user": "Bye?"}


def test_sharegpt_bad_turns_are_quarantined(tmp_path):
    records = [{"conversations": [{"from": "gpt", "value": "I speak first"}, {"from": "human", "value": "ok"},
                                  {"from": "gpt", "value": "fine"}]},
               {"conversations": [{"from": "human", "value": "x"}, {"from": "narrator", "value": "y"}]},
               {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{}"}]},
               {"conversations": "not a list"},
               {"conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": "answer"}]}]
    path = write_jsonl(tmp_path / "s.jsonl", records)
    _, stats, quarantine = ingest(path)
    assert stats["quarantined"] == {"unsupported_role": 1, "bad_tool_call": 1, "bad_structure": 1, "empty_user": 1}
    assert quarantine.column("field").to_pylist()[0] == "conversations[1].from"
    assert stats["kept"] == 1 and stats["repairs"] == {"conversations": 1, "dropped_leading_turns": 1}
    _, stats, _ = ingest(path, repair=False)
    assert stats["quarantined"] == {"not_alternating": 1, "unsupported_role": 1, "bad_tool_call": 1,
                                    "bad_structure": 1, "empty_user": 1}
    assert stats["repairs"] == {} and stats["kept"] == 0


def test_oasst1_trees_follow_the_best_ranked_reply(tmp_path):
    msgs = [
        {"message_id": "p1", "parent_id": None, "role": "prompter", "text": "What is 2+2?", "rank": None,
         "message_tree_id": "p1", "lang": "en"},
        {"message_id": "a2", "parent_id": "p1", "role": "assistant", "text": "5", "rank": 1},
        {"message_id": "a1", "parent_id": "p1", "role": "assistant", "text": "4", "rank": 0},
        {"message_id": "p2", "parent_id": "a1", "role": "prompter", "text": "And 3+3?", "rank": 0},
        {"message_id": "a3", "parent_id": "p2", "role": "assistant", "text": "6", "rank": None},
        {"message_id": "q1", "parent_id": None, "role": "prompter", "text": "Unanswered", "message_tree_id": "q1"},
    ]
    table, stats, quarantine = ingest(write_jsonl(tmp_path / "oasst.jsonl", msgs))
    assert stats["format"] == "oasst1" and stats["read"] == 2
    assert messages(table) == [("user", "What is 2+2?"), ("assistant", "4"), ("user", "And 3+3?"),
                               ("assistant", "6")]
    assert json.loads(table.column("meta")[0].as_py())["message_ids"] == ["p1", "a1", "p2", "a3"]
    assert quarantine.column("reason").to_pylist() == ["no_assistant_turn"]


def test_canonical_reenters_with_the_same_ids(tmp_path, shared_data):
    from tasks.exports import write_export

    table, _, _ = ingest(shared_data / "alpaca" / "seed_tasks.jsonl")
    for name in ("canon.parquet", "canon.jsonl"):
        assert write_export([table], "canonical", str(tmp_path / name)).written == table.num_rows
        again, stats, _ = ingest(tmp_path / name)
        assert stats["format"] == "canonical"
        assert again.column("id").to_pylist() == table.column("id").to_pylist()
        assert again.column("meta").to_pylist() == table.column("meta").to_pylist()
        assert again.column("source")[0].as_py()["uri"] == str(tmp_path / name)


def test_medicationqa_mapping_on_a_csv(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("Question,Focus (Drug),Question Type,Answer,Section Title,URL\n"
                    "what is it for?,aspirin,Indication,Pain and fever.,Why?,https://x\n", encoding="utf-8")
    table, stats, _ = ingest(path)
    assert stats["format"] == "medicationqa"
    assert table.column("system").to_pylist() == [MEDICATIONQA_SYSTEM]
    assert json.loads(table.column("meta")[0].as_py()) == {"Focus (Drug)": "aspirin", "Question Type": "Indication",
                                                          "Section Title": "Why?", "URL": "https://x"}


def test_unknown_format_says_what_it_saw_and_suggests_format(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(BadInputError, match=r"keys \['completion', 'prompt'\].*--format"):
        ingest(path)
    table, stats, _ = ingest(path, mapping={"input": "prompt", "output": "completion"})
    assert stats["format"] == "columns" and messages(table) == [("user", "a"), ("assistant", "b")]
    with pytest.raises(BadInputError, match="unknown format 'alpacca'"):
        ingest(path, format="alpacca")


def test_explicit_format_overrides_detection(tmp_path):
    path = write_json(tmp_path / "a.json", [{"instruction": "Say hi", "output": "hi", "text": "### Human: x"}])
    assert ingest(path)[1]["format"] == "alpaca"
    with pytest.raises(BadInputError, match="missing column"):
        ingest(path, format="columns", mapping={"input": "question", "output": "answer"})


def test_fast_record_id_equals_the_canonical_json_digest():
    """storage.schema hashes with orjson for speed; it must give exactly digest([system, [[role, content]]])."""
    from storage.keys import digest
    from storage.schema import make_record, normalize_text, record_id

    samples = ["plain", 'quo"te \\ back', "tab\tnew\nline\r\nCR\rend", "\x00\x01\x1f\x7f", "é e\u0301 中文 😀",
               "\u2028\u2029\ufeff", "  padded  ", ""]
    for text in samples:
        msgs = [{"role": "user", "content": text or "x"}, {"role": "assistant", "content": text[::-1] or "y"}]
        expected = digest([normalize_text(text), [[m["role"], normalize_text(m["content"])] for m in msgs]], chars=32)
        assert record_id(text, msgs) == expected
        assert make_record(messages=msgs, system=text, uri="u", fmt="f", row=0)["id"] == expected


def test_new_fields_round_trip_with_the_same_ids(tmp_path):
    """ingest → export → ingest keeps the ids of tool calls, tool results, tool definitions and loss weights in
    every format that holds them; each format leaves out (and counts) what it cannot hold."""
    from tasks.exports import INGEST_EXPORTS, write_export
    from tests.published_layouts import glaive_rows, v1

    tools = json.dumps([{"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}])
    openai = [
        {"messages": [v1("user", "2+2?", 0.0), v1("assistant", "5", 0.0), v1("user", "Again?", 0.0),
                      v1("assistant", "4", 1.0)]},  # C: a silent answer
        {"messages": [{"role": "user", "content": "Owl?"},
                      {"role": "assistant", "content": "Let me check.", "tool_calls": [{
                          "id": "c9", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"owl"}'}}]},
                      {"role": "tool", "tool_call_id": "c9", "content": "a bird"},
                      {"role": "assistant", "content": "A bird."}], "tools": json.loads(tools)},  # D: text and a call
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "tools": json.loads(tools)},  # E: tools, no call
    ]
    sharegpt = [glaive_rows()[0],  # A: calls and results, tool definitions
                {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"},
                                   {"from": "gpt", "value": "Bye!"}]}]  # B: plain
    a_b = ingest(write_json(tmp_path / "glaive.json", sharegpt))[0]
    c_d_e = ingest(write_jsonl(tmp_path / "openai.jsonl", openai))[0]
    ids = dict(zip("ABCDE", a_b.column("id").to_pylist() + c_d_e.column("id").to_pylist()))
    source = [a_b, c_d_e]
    holds = {"openai": ("ABCDE", {}), "canonical": ("ABCDE", {}),
             "sharegpt": ("ABE", {"loss_weight": 1, "tool_call_with_text": 1}),
             "xtuner": ("BC", {"tools": 3}), "alpaca": ("B", {"loss_weight": 1, "tools": 3})}
    assert set(holds) == set(INGEST_EXPORTS)
    for fmt, (kept, skipped) in holds.items():
        path = tmp_path / f"out-{fmt}.{'json' if fmt in ('alpaca', 'sharegpt') else 'jsonl'}"
        done = write_export(source, fmt, str(path))
        assert (done.written, done.skipped) == (len(kept), skipped), fmt
        again, stats, _ = ingest(path)
        assert stats["quarantined"] == {} and again.column("id").to_pylist() == [ids[k] for k in kept], fmt
        if fmt in ("openai", "canonical"):
            assert again.column("tools").to_pylist() == pa.concat_tables(source).column("tools").to_pylist()
