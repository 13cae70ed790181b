"""The `format` stage end to end on a real store: tiny_lm published as a base_model artifact, exports checked."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.stages.format import STAGE, FormatConfig
from tasks.templates import get_template
from tasks.text import alpaca_user_content
from tasks.tokenize import NO_ASSISTANT, TOO_LONG


def selection_table() -> pa.Table:
    records = [
        make_record(messages=[{"role": "user", "content": alpaca_user_content("Translate.", "Bonjour")},
                              {"role": "assistant", "content": "Hello"}],
                    system=None, uri="alpaca.json", fmt="alpaca", row=0,
                    meta={"instruction": "Translate.", "input": "Bonjour"}),
        make_record(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
                              {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye"}],
                    system="Be kind.", uri="chat.jsonl", fmt="sharegpt", row=1),
        make_record(messages=[{"role": "user", "content": "unanswered"}], system=None, uri="chat.jsonl",
                    fmt="sharegpt", row=2),
        make_record(messages=[{"role": "user", "content": " ".join(["word"] * 300)},
                              {"role": "assistant", "content": "late"}], system=None, uri="chat.jsonl",
                    fmt="sharegpt", row=3),
    ]
    table = records_to_table(records)
    return table.append_column("score", pa.array([0.9, 0.8, 0.7, 0.6]))  # selection columns ride along


@pytest.fixture
def inputs(store, tiny_lm):
    with store.writer("base_model-tiny", "base_model", kind="model") as writer:
        writer.add_file("model", tiny_lm)
    selection = store.publish_table("select-test", "select", selection_table())
    return {"selection": selection, "base_model": store.ref("base_model-tiny")}


def test_format_stage(store, inputs, tiny_lm):
    params = FormatConfig(template="alpaca", max_length=128)
    result = run_stage(STAGE, params, inputs, store)
    table = store.read_table(result.ref.key)
    assert table.column_names == ["id", "input_ids", "labels", "length", "num_supervised", "text"]
    assert table.schema.field("input_ids").type.value_type == pa.int32()
    assert table.num_rows == 2
    stats = store.manifest(result.ref.key)["stats"]
    assert stats["rows_in"] == 4 and stats["rows_out"] == 2 and stats["quarantined"] == 2
    assert stats["quarantine_reasons"] == {NO_ASSISTANT: 1, TOO_LONG: 1}
    assert 0 < stats["supervised_share"] < 1 and stats["template"] == "alpaca"
    quarantine = store.read_table(result.ref.key + "-quarantine").to_pylist()
    assert {q["reason"] for q in quarantine} == {NO_ASSISTANT, TOO_LONG}
    assert all(q["detail"] for q in quarantine)

    texts = table.column("text").to_pylist()
    assert texts[0].startswith("Below is an instruction that describes a task, paired with an input")
    assert store.read_file(result.ref.key, "chat_template.jinja").decode() == get_template("alpaca").chat_template()
    lines = [json.loads(x) for x in store.read_file(result.ref.key, "exports/text.jsonl").decode().splitlines()]
    assert [x["text"] for x in lines] == texts
    xtuner = [json.loads(x) for x in store.read_file(result.ref.key, "exports/xtuner.jsonl").decode().splitlines()]
    assert xtuner[1]["conversation"] == [{"system": "Be kind.", "input": "Hi", "output": "Hello there"},
                                         {"input": "Bye", "output": "Goodbye"}]
    assert xtuner[0]["conversation"] == [{"input": "Translate.\n\nBonjour", "output": "Hello"}]
    info = json.loads(store.read_file(result.ref.key, "exports/llamafactory/dataset_info.json"))
    assert info["sftflow"]["file_name"] == "data.json" and info["sftflow"]["formatting"] == "sharegpt"
    data = json.loads(store.read_file(result.ref.key, "exports/llamafactory/data.json"))
    assert data[1]["system"] == "Be kind." and [m["role"] for m in data[1]["messages"]] == ["user", "assistant"] * 2
    assert store.read_file(result.ref.key, "format_lengths.png")[:4] == b"\x89PNG"
    assert "supervised share" in store.read_file(result.ref.key, "report.md").decode()

    # same inputs and params: cache hit; the batch size is not part of the key
    again = run_stage(STAGE, FormatConfig(template="alpaca", max_length=128, batch_size=1), inputs, store)
    assert again.status == "cached" and again.ref.key == result.ref.key


def test_format_stage_system_override_and_last_turn(store, inputs):
    params = FormatConfig(template="chatml", max_length=128, train_on="last_assistant", system="", exports=[])
    result = run_stage(STAGE, params, inputs, store)
    rows = store.read_table(result.ref.key).to_pylist()
    assert all("<|im_start|>system" not in r["text"] for r in rows)
    files = {f["name"] for f in store.manifest(result.ref.key)["files"]}
    assert not any(name.startswith("files/exports/") for name in files)


def test_unknown_template_is_bad_input(store, inputs):
    with pytest.raises(BadInputError, match="unknown template"):
        run_stage(STAGE, FormatConfig(template="nope"), inputs, store)


def test_everything_quarantined_still_publishes(store, inputs):
    result = run_stage(STAGE, FormatConfig(template="llama2", max_length=8), inputs, store)
    assert store.read_table(result.ref.key).num_rows == 0
    stats = store.manifest(result.ref.key)["stats"]
    assert stats["rows_out"] == 0 and stats["quarantined"] == 4
    assert store.read_table(result.ref.key + "-quarantine").num_rows == 4


def test_stage_output_trains_the_same_packed_or_padded(store, inputs, tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.collate import SFTCollator

    result = run_stage(STAGE, FormatConfig(template="chatml", max_length=128, exports=[]), inputs, store)
    rows = store.read_table(result.ref.key, columns=["input_ids", "labels"]).to_pylist()
    model = AutoModelForCausalLM.from_pretrained(tiny_lm, attn_implementation="sdpa")
    padded = SFTCollator(pad_token_id=0)(rows)
    packed = SFTCollator(pad_token_id=0, pack=True, max_length=128)(rows)
    assert packed["input_ids"].shape[0] == 1  # both samples share one row
    loss_padded = model(**padded).loss
    loss_packed = model(**packed).loss
    loss_packed.backward()
    assert torch.isfinite(loss_packed)
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-4, rtol=1e-4)


def test_format_stage_with_tool_calls_and_loss_weights(store, tiny_lm):
    tools = json.dumps([{"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}])
    rows = [
        make_record(messages=[{"role": "user", "content": "Owl?"}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": None, "name": "lookup", "arguments": '{"q": "owl"}'}]}, {"role": "tool", "content": "a bird"},
            {"role": "assistant", "content": "A bird."}], system=None, uri="t.jsonl", fmt="openai", row=0, tools=tools),
        make_record(messages=[{"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "5", "loss_weight": 0.0},
                              {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "4"}],
                    system=None, uri="t.jsonl", fmt="openai", row=1),
    ]
    with store.writer("base_model-tiny", "base_model", kind="model") as writer:
        writer.add_file("model", tiny_lm)
    inputs = {"selection": store.publish_table("select-tools", "select", records_to_table(rows)),
              "base_model": store.ref("base_model-tiny")}
    result = run_stage(STAGE, FormatConfig(template="chatml", max_length=1024), inputs, store)  # the tiny BPE is long
    stats = store.manifest(result.ref.key)["stats"]
    assert stats["rows_out"] == 2 and stats["quarantined"] == 0
    table = store.read_table(result.ref.key).to_pylist()
    assert "<tool_call>\n{\"name\": \"lookup\"" in table[0]["text"] and "# Tools" in table[0]["text"]
    # xtuner holds the loss weight but not the tools; LLaMA-Factory the tools but not the loss weight
    assert any("exports/xtuner.jsonl leaves out 1 (tools: " in w for w in stats["warnings"])
    assert any("exports/llamafactory/data.json leaves out 1 (loss_weight: " in w for w in stats["warnings"])
    xtuner = [json.loads(x) for x in store.read_file(result.ref.key, "exports/xtuner.jsonl").decode().splitlines()]
    assert xtuner == [{"id": rows[1]["id"], "conversation": [
        {"input": "2+2?", "output": "5", "output_with_loss": False}, {"input": "Again?", "output": "4"}]}]
    assert "**Warning:** exports/xtuner.jsonl leaves out" in store.read_file(result.ref.key, "report.md").decode()

    refused = run_stage(STAGE, FormatConfig(template="alpaca", max_length=1024, exports=[]), inputs, store)
    stats = store.manifest(refused.ref.key)["stats"]
    assert stats["rows_out"] == 1 and stats["quarantine_reasons"] == {"no_tool_format": 1}
    assert any("no_tool_format" in w and "use chatml, llama3" in w for w in stats["warnings"])
