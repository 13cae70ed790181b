"""Real published layouts (issue 19), built as the projects publish them, with every count asserted: ShareGPT V3's
"split" file, OpenAssistant's own tree and nested-message exports, JSONL lines that are bare message lists,
LLaMA-Factory's v1 content parts and loss weights, tool calling in ShareGPT's and OpenAI's spellings, and
preference data."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from storage.schema import make_record
from tests.conftest import ROOT
from tests.ingest_helpers import ingest, messages, write_json, write_jsonl
from tests.published_layouts import (
    AREA_TOOLS,
    flatten,
    glaive_rows,
    node,
    oasst_trees,
    openai_tool_rows,
    sharegpt_v3_split,
    turns,
    v1,
)


def test_sharegpt_v3_split_is_repaired_and_counted(tmp_path):
    path = write_json(tmp_path / "ShareGPT_V3_unfiltered_cleaned_split.json", sharegpt_v3_split())
    table, stats, quarantine = ingest(path)
    assert stats["format"] == "sharegpt" and stats["read"] == 25
    assert stats["quarantined"] == {"empty_assistant": 1, "empty_user": 1, "no_user_turn": 1, "not_alternating": 1}
    assert stats["kept"] == 21 and stats["duplicates"] == 0
    # 7 chunks lost 8 leading gpt turns, 2 conversations merged a repeated role, 3 renamed a role
    assert stats["repairs"] == {"conversations": 12, "dropped_leading_turns": 8, "merged_turns": 2,
                                "renamed_roles": 3}
    rows = {json.loads(r["meta"])["id"]: r for r in table.to_pylist()}
    chunk = rows["long0_1"]
    assert [(m["role"], m["content"]) for m in chunk["messages"]] == [("user", "Follow-up 0?"),
                                                                       ("assistant", "Reply 0.")]
    assert json.loads(chunk["meta"])["repairs"] == {"dropped_leading_turns": 1}
    assert rows["humans_0"]["messages"][0]["content"] == "Part one.\n\nPart two."
    assert rows["gpts_0"]["messages"][1]["content"] == "First half\n\nsecond half."
    assert json.loads(rows["bing_0"]["meta"])["repairs"] == {"renamed_roles": 1}
    assert rows["system_0"]["system"] == "Be terse." and "repairs" not in json.loads(rows["plain0_0"]["meta"])
    # a repaired chunk gets the id the same conversation has without the leading turn
    clean = make_record(messages=[{"role": "user", "content": "Follow-up 0?"},
                                  {"role": "assistant", "content": "Reply 0."}], system=None, uri="u", fmt="f", row=0)
    assert chunk["id"] == clean["id"]
    assert quarantine.column("reason").to_pylist() == ["empty_user", "empty_assistant", "no_user_turn",
                                                       "not_alternating"]
    assert stats["warnings"] == []  # each reason is 1 of 25 (4%), under the 5% share

    _, off, _ = ingest(path, repair=False)
    assert off["quarantined"] == {"empty_assistant": 1, "empty_user": 1, "not_alternating": 11,
                                  "unsupported_role": 3}
    assert off["kept"] == 9 and off["repairs"] == {}
    assert len(off["warnings"]) == 2 and "not_alternating: --repair" in off["warnings"][0]
    assert "unsupported_role: --repair reads chatgpt/bing/bard/model" in off["warnings"][1]


def test_openassistant_exports_trees_nested_messages_and_flat_give_the_same_conversations(tmp_path):
    trees = oasst_trees()
    trees_file = tmp_path / "2023-04-12_oasst_ready.trees.jsonl.gz"
    trees_file.write_bytes(gzip.compress("".join(json.dumps(t) + "\n" for t in trees).encode()))
    nested = write_jsonl(tmp_path / "messages_nested.jsonl", [t["prompt"] for t in trees])
    flat = write_jsonl(tmp_path / "oasst1_flat.jsonl",
                       [m for t in trees for m in flatten(t["prompt"], None, t["message_tree_id"])])
    results = {}
    for name, path in (("oasst-trees", trees_file), ("oasst-trees", nested), ("oasst1", flat)):
        table, stats, quarantine = ingest(path)
        assert stats["format"] == name and stats["read"] == 6 and stats["kept"] == 3
        assert stats["quarantined"] == {"deleted": 1, "failed_review": 1, "no_assistant_turn": 1}
        # replies skipped on the followed path: the deleted rank-0 answer and the reply that failed review
        assert stats["skipped_messages"] == {"deleted": 1, "failed_review": 1}
        results[path.name] = table
    table = results[trees_file.name]
    assert messages(table, 0) == [("user", "What is 2+2?"), ("assistant", "4"), ("user", "And times 3?"),
                                  ("assistant", "12")]
    assert messages(table, 2) == [("user", "¿Hola?"), ("assistant", "Hola.")]  # unranked: the first reply
    meta = json.loads(table.column("meta")[0].as_py())
    assert meta == {"lang": "en", "message_ids": ["t1-p1", "t1-a1", "t1-p2", "t1-a4"], "message_tree_id": "t1-p1",
                    "tree_state": "ready_for_export"}
    ids = [t.column("id").to_pylist() for t in results.values()]
    assert ids[0] == ids[1] == ids[2]

    english, stats, quarantine = ingest(trees_file, lang=["en"])
    assert english.num_rows == 1 and stats["quarantined"]["filtered_lang"] == 2
    assert stats["warnings"] == [w for w in stats["warnings"] if "filtered_lang" not in w]  # asked for: no warning
    assert len(stats["warnings"]) == 3  # deleted, failed_review and no_assistant_turn are each 1 of 6
    two, _, _ = ingest(flat, lang=["EN", "es"])
    assert two.num_rows == 2


def test_oasst_lang_filter_keeps_records_without_a_lang_and_reads_every_row(tmp_path):
    rows = [{"instruction": "Hi", "output": "Hello", "lang": "en"}, {"instruction": "Salut", "output": "Bonjour",
                                                                     "lang": "fr"},
            {"instruction": "No lang", "output": "kept"}]
    table, stats, _ = ingest(write_json(tmp_path / "a.json", rows), lang=["en"])
    assert stats["format"] == "alpaca" and stats["kept"] == 2 and stats["quarantined"] == {"filtered_lang": 1}


# -- JSONL of bare message lists -----------------------------------------------------------------------------------
def test_jsonl_lines_that_are_message_lists_are_openai_records(tmp_path):
    """As xtuner's OpenAI-format test data: every line is `[{"role": …, "content": …}, …]`."""
    lines = [[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}],
             [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
              {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
             [1, 2, 3]]
    table, stats, quarantine = ingest(write_jsonl(tmp_path / "openai.jsonl", lines))
    assert stats["format"] == "openai" and stats["read"] == 3 and stats["kept"] == 2
    assert stats["quarantined"] == {"not_an_object": 1}
    assert table.column("system").to_pylist() == ["You are a helpful assistant.", None]
    assert messages(table, 1)[-1] == ("assistant", "4")
    # a one-line JSON array of records is still read as an array
    one_line = tmp_path / "array.jsonl"
    one_line.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]))
    assert ingest(one_line)[1]["kept"] == 2


# -- LLaMA-Factory v1 --------------------------------------------------------------------------------------------
def test_llamafactory_v1_content_parts_and_loss_weights(tmp_path):
    rows = [{"messages": [v1("system", "Be kind.", 0.0), v1("user", "Hi", 0.0), v1("assistant", "Hello", 1.0)]},
            {"messages": [v1("user", "2+2?", 0.0), v1("assistant", "5", 0.0), v1("user", "Again?", 0.0),
                          v1("assistant", "4", 1.0)]},
            {"messages": [v1("user", "Area?", 0.0), {"role": "assistant", "loss_weight": 1.0, "content": [
                {"type": "tool_call", "value": json.dumps({"name": "area", "arguments": {"r": 2}})}]},
                v1("tool", "12.57", 0.0), v1("assistant", "About 12.57.", 1.0)]},
            {"messages": [v1("user", "x", 0.0), v1("assistant", "y", 0.5)]},
            {"messages": [v1("user", "x", 1.0), v1("assistant", "y", 1.0)]},
            {"messages": [v1("user", "look", 0.0), {"role": "assistant", "content": [
                {"type": "image_url", "value": "a.png"}], "loss_weight": 1.0}]}]
    table, stats, quarantine = ingest(write_jsonl(tmp_path / "v1_sft_demo.jsonl", rows))
    assert stats["format"] == "openai" and stats["read"] == 6 and stats["kept"] == 3
    assert stats["quarantined"] == {"unsupported_content": 1, "unsupported_loss_weight": 2}
    records = table.to_pylist()
    assert records[0]["system"] == "Be kind." and [m["loss_weight"] for m in records[0]["messages"]] == [None, None]
    assert [m["loss_weight"] for m in records[1]["messages"]] == [None, 0.0, None, None]
    call = records[2]["messages"][1]["tool_calls"]
    assert call == [{"id": None, "name": "area", "arguments": '{"r":2}'}]
    assert records[2]["messages"][2]["role"] == "tool"
    # the default weights (0 on prompts, 1 on answers) leave the id the plain conversation has
    plain = make_record(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                        system="Be kind.", uri="u", fmt="f", row=0)
    assert records[0]["id"] == plain["id"] and records[1]["id"] != make_record(
        messages=[{"role": r, "content": c} for r, c in messages(table, 1)], system=None, uri="u", fmt="f", row=0)["id"]
    assert "only assistant turns carry loss" in quarantine.column("detail").to_pylist()[1]


# -- tool calling ----------------------------------------------------------------------------------------------
def test_tool_calling_in_sharegpt_and_openai_spellings(tmp_path):
    table, stats, quarantine = ingest(write_json(tmp_path / "glaive_toolcall_en_demo.json", glaive_rows()))
    assert stats["format"] == "sharegpt" and stats["read"] == 4 and stats["kept"] == 2
    assert stats["quarantined"] == {"bad_tool_call": 1, "not_alternating": 1}
    record = table.to_pylist()[0]
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"] * 2
    assert record["messages"][1]["tool_calls"] == [
        {"id": None, "name": "calculate_area", "arguments": '{"shape":"rectangle","dimensions":[5,3]}'}]
    assert record["messages"][2]["content"] == '{"area": 15}' and json.loads(record["tools"]) == AREA_TOOLS
    assert table.column("tools").to_pylist()[1] is None  # "[]": no tools, the plain conversation's id
    assert table.column("id")[1].as_py() == make_record(
        messages=[{"role": "user", "content": "Define photoshop."},
                  {"role": "assistant", "content": "An image editor."}], system=None, uri="u", fmt="f", row=0)["id"]
    openai, stats, _ = ingest(write_jsonl(tmp_path / "tools.jsonl", openai_tool_rows()))
    assert stats["format"] == "openai" and stats["kept"] == 1 and stats["quarantined"] == {}
    calls = openai.to_pylist()[0]["messages"]
    assert calls[1]["tool_calls"][0]["id"] == "call_1" and calls[2]["tool_call_id"] == "call_1"
    assert openai.column("id")[0].as_py() == record["id"]  # the same conversation, whatever the spelling


def test_preference_records_need_preference_chosen(tmp_path):
    """As LLaMA-Factory's dpo_en_demo.json: conversations ending with the prompt, chosen and rejected answers."""
    rows = [{"conversations": turns(("human", f"Question {i}?")), "chosen": {"from": "gpt", "value": f"Good {i}."},
             "rejected": {"from": "gpt", "value": f"Bad {i}."}} for i in range(3)]
    rows.append({"conversations": turns(("system", "Be a teacher."), ("human", "Q"), ("gpt", "A"), ("human", "Q2")),
                 "chosen": {"from": "gpt", "value": "A2"}, "rejected": {"from": "gpt", "value": "meh"}})
    path = write_json(tmp_path / "dpo_en_demo.json", rows)
    table, stats, quarantine = ingest(path)
    assert stats["kept"] == 0 and stats["quarantined"] == {"preference_record": 4}
    assert "--preference chosen" in quarantine.column("detail")[0].as_py()
    assert stats["warnings"] == ["4 of 4 conversations (100%) quarantined as preference_record: --preference chosen "
                                 "(source option preference: chosen) takes the chosen answer as the assistant turn "
                                 "and keeps the rejected one in meta"]
    table, stats, _ = ingest(path, preference="chosen")
    assert stats["kept"] == 4 and stats["quarantined"] == {} and stats["warnings"] == []
    assert messages(table, 0) == [("user", "Question 0?"), ("assistant", "Good 0.")]
    assert json.loads(table.column("meta")[0].as_py()) == {"rejected": "Bad 0."}
    assert table.column("system")[3].as_py() == "Be a teacher." and messages(table, 3)[-1] == ("assistant", "A2")


def test_cli_prints_repairs_and_warnings_and_takes_the_new_options(tmp_path):
    dpo = write_json(tmp_path / "dpo.json", [{"conversations": turns(("human", "Q?")), "chosen": {"from": "gpt",
                                              "value": "A."}, "rejected": {"from": "gpt", "value": "B."}}])
    split = write_json(tmp_path / "split.json", sharegpt_v3_split())
    env = {**__import__("os").environ, "SFTFLOW_HOME": str(tmp_path / "home")}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "flows", "ingest", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    done = run(str(dpo), str(split))
    assert done.returncode == 0, done.stderr
    assert "warning: dpo.json: 1 of 1 conversations (100%) quarantined as preference_record: --preference chosen" \
        in done.stdout
    assert "repaired 12 conversations: dropped_leading_turns 8, merged_turns 2, renamed_roles 3" in done.stdout
    result = json.loads(run(str(dpo), str(split), "--preference", "chosen", "--no-repair", "--lang", "en",
                            "--json").stdout)
    assert result["quarantined"] == {"empty_assistant": 1, "empty_user": 1, "not_alternating": 11,
                                     "unsupported_role": 3}
    assert result["kept"] == 10 and result["repairs"] == {}
    assert [w.split(":")[0] for w in result["warnings"]] == ["split.json", "split.json"]
    from storage.store import Store

    report = Store(str(tmp_path / "home" / "store")).read_file(result["key"], "report.md").decode()
    assert "**Warning:** split.json: 11 of 25 conversations (44%) quarantined as not_alternating: --repair" in report


@pytest.mark.parametrize("layout", ["trees", "nested"])
def test_oasst_tree_with_a_bad_reply_list_is_quarantined(tmp_path, layout):
    tree = node("p", "prompter", "q")
    tree["replies"] = ["not a message"]
    record = {"message_tree_id": "p", "prompt": tree} if layout == "trees" else tree
    _, stats, _ = ingest(write_jsonl(tmp_path / "t.jsonl", [record]), format="oasst-trees")
    assert stats["quarantined"] == {"bad_structure": 1}
