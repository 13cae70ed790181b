"""`sftflow export`: every format read back by `sftflow ingest` (demo data and seeded random conversations), the
provenance beside every export, real consumers (`datasets`), bad input, S3, and the export stage's plan."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from flows.cli import main
from storage.schema import make_record, records_to_table
from storage.store import Store
from tasks.exports import ANSWER_FORMATS, EXPORT_FORMATS, FOLDER_FORMATS
from tests.ingest_helpers import ingest

ROOT = Path(__file__).resolve().parents[1]
# what ingest reads back as the same conversations (the answer formats are for the official evaluators)
CONVERSATION_FORMATS = tuple(f for f in EXPORT_FORMATS if f not in ANSWER_FORMATS)
DEMO = ROOT / "demo" / "data"
SUFFIX = {"openai": "jsonl", "sharegpt": "json", "alpaca": "json", "xtuner": "jsonl", "parquet": "parquet"}


@pytest.fixture(scope="module", autouse=True)
def demo_data():
    if not (DEMO / "alpaca_demo.json").exists():
        import subprocess
        import sys

        subprocess.run([sys.executable, "demo/build_data.py", "demo/data"], cwd=ROOT, check=True)


def sftflow(*args: str) -> tuple[int, dict, str]:
    """The CLI in this process: (exit code, its one JSON object, stderr). Its output goes to buffers that stay
    open (a log handler set up during the call may keep one; capsys closes its streams after the test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--json"])
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, out.getvalue()  # exactly one JSON object on stdout
    return code, json.loads(lines[0]), err.getvalue()


def destination(folder: Path, fmt: str) -> Path:
    return folder / (fmt if fmt in FOLDER_FORMATS else f"{fmt}.{SUFFIX[fmt]}")


def read_back(path: Path, fmt: str) -> pa.Table:
    """What `sftflow ingest` makes of an export (its reader, without the store)."""
    source = {"hf": f"hf:{path}", "llamafactory": str(path / "data.json")}.get(fmt, str(path))
    table, stats, quarantine = ingest(source)
    assert quarantine.num_rows == 0 and stats["duplicates"] == 0, (fmt, stats)
    return table


def conversations(table: pa.Table) -> list[tuple]:
    """What a round trip must keep: system prompt, roles, contents, tool calls (name and arguments), tools."""
    return [(row["system"], [(m["role"], m["content"], [(c["name"], c["arguments"]) for c in m["tool_calls"] or []])
                             for m in row["messages"]], row["tools"]) for row in table.to_pylist()]


@pytest.fixture
def demo_key(store) -> str:
    """The demo's three sources ingested (sftflow ingest)."""
    code, result, err = sftflow("ingest", *(str(DEMO / name) for name in (
        "medicationqa_demo.xlsx", "guanaco_demo.jsonl", "alpaca_demo.json")), "--store", store.url)
    assert code == 0, err
    return result["key"]


def test_every_format_of_the_demo_data_reads_back_as_the_same_conversations(store, tmp_path, demo_key):
    out = tmp_path / "out"
    targets = [f"{fmt}:{destination(out, fmt)}" for fmt in CONVERSATION_FORMATS]
    code, result, err = sftflow("export", demo_key, *(a for t in targets for a in ("--to", t)),
                                "--store", store.url)
    assert code == 2 and "alpaca holds one exchange per record, and 10 conversation(s) have more" in err
    assert result["ok"] is False and result["field"] == "multi_turn"
    assert not out.exists() or list(out.iterdir()) == []  # refused before any destination was touched

    code, result, err = sftflow("export", demo_key, *(a for t in targets for a in ("--to", t)),
                                "--multi-turn", "history", "--store", store.url)
    assert code == 0, err
    source = store.read_table(demo_key)
    for entry in result["exports"]:
        fmt = entry["format"]
        assert entry["rows"] == source.num_rows and entry["left_out"] == {}, fmt
        again = read_back(Path(entry["path"]), fmt)
        assert again.column("id").to_pylist() == source.column("id").to_pylist(), fmt
        assert conversations(again) == conversations(source), fmt
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [destination(out, f).name for f in CONVERSATION_FORMATS]
        + [destination(out, f).name + ".sftflow.json" for f in CONVERSATION_FORMATS if f not in FOLDER_FORMATS])

    # provenance: the sources with the checksums of their bytes, the counts, the store keys, the version
    facts = json.loads((out / "openai.jsonl.sftflow.json").read_text())
    sources = {Path(s["uri"]).name: s for s in facts["sources"]}
    for name, entry in sources.items():
        assert entry["checksum"] == hashlib.sha256((DEMO / name).read_bytes()).hexdigest()
    assert sources["alpaca_demo.json"]["read"] == 31 and sources["alpaca_demo.json"]["kept"] == 30
    assert facts["counts"] == {"read": 79, "quarantined": 3, "duplicates": 1, "ingested": 75, "dedup_removed": None,
                               "deduplicated": None, "selected": None, "dataset": 75}
    assert {s["stage"] for s in facts["stages"]} == {"ingest", "ingest.source"} and facts["sftflow_version"]
    assert facts["exported"]["files"][0]["sha256"] == hashlib.sha256((out / "openai.jsonl").read_bytes()).hexdigest()
    card = (out / "hf" / "README.md").read_text()
    assert card.startswith("---\ntags: [sftflow") and "| read from the sources | 79 |" in card
    assert json.loads((out / "llamafactory" / "dataset_info.json").read_text())["llamafactory"]["formatting"] == \
        "sharegpt"


def test_real_consumers_read_the_hf_and_openai_exports(store, tmp_path, demo_key):
    import datasets

    code, result, err = sftflow("export", demo_key, "--to", f"hf:{tmp_path / 'hf'}", "--to",
                                f"openai:{tmp_path / 'sel.jsonl'}", "--system", "Be brief.", "--store", store.url)
    assert code == 0, err
    expected = [[{"role": "system", "content": "Be brief."}, *({"role": m["role"], "content": m["content"]}
                                                               for m in row["messages"])]
                for row in store.read_table(demo_key).to_pylist()]
    on_disk = datasets.load_from_disk(str(tmp_path / "hf"))
    assert list(on_disk.features) == ["messages"]  # TRL's conversational format: messages of role and content
    assert [row["messages"] for row in on_disk] == expected
    lines = datasets.load_dataset("json", data_files=str(tmp_path / "sel.jsonl"), split="train",
                                  cache_dir=str(tmp_path / "cache"))
    assert [row["messages"] for row in lines] == expected


TOOLS = [{"name": "lookup", "description": "Look a word up", "parameters": {"type": "object", "properties": {
    "q": {"type": "string"}}}}, {"name": "weather", "description": "Météo", "parameters": {"type": "object"}}]
WORDS = ["owl", "naïve", "Straße", "日本語", "emoji 🦉", "e\u0301", "\"quoted\"", "back\\slash", "tab\there",
         "new\nline", "العربية", "{json: 1}", "### Human:", "<|im_end|>", "0", "null"]


def random_conversation(rng: random.Random, i: int) -> dict:
    """A conversation in the canonical record: 1-4 exchanges, any system prompt (none, empty, blank, unicode),
    sometimes tool definitions, calls (with or without text, one or two at once) and their results, sometimes an
    earlier answer without loss."""
    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))

    tools = rng.random() < 0.35
    messages = []
    exchanges = rng.randint(1, 4)
    for turn in range(exchanges):
        messages.append({"role": "user", "content": f"{i}.{turn} {text()}"})
        if tools and rng.random() < 0.6:
            calls = [{"id": f"call_{i}_{turn}_{n}", "name": rng.choice(TOOLS)["name"],
                      "arguments": json.dumps({"q": text(), "n": rng.randint(-5, 5)}, ensure_ascii=False)}
                     for n in range(rng.choice([1, 1, 2]))]
            messages.append({"role": "assistant", "content": rng.choice(["", "", text()]), "tool_calls": calls})
            messages += [{"role": "tool", "content": text(), "tool_call_id": call["id"]} for call in calls]
        silent = turn < exchanges - 1 and rng.random() < 0.15
        messages.append({"role": "assistant", "content": text(), **({"loss_weight": 0.0} if silent else {})})
    system = rng.choice([None, "", "   ", "Be brief.", "Réponds en français, s'il te plaît. 🙂"])
    return make_record(messages=messages, system=system, uri="generated", fmt="canonical", row=i,
                       tools=TOOLS if tools else None)


def cannot_hold(record: dict, fmt: str) -> bool:
    """What each format cannot represent, written from the formats' own definitions."""
    calls = any(m.get("tool_calls") for m in record["messages"])
    silent = any(m.get("loss_weight") == 0 for m in record["messages"])
    talking_call = any(m.get("tool_calls") and m["content"] for m in record["messages"])
    if fmt in ("sharegpt", "llamafactory"):
        return silent or talking_call
    if fmt == "xtuner":
        return bool(record["tools"]) or calls
    if fmt == "alpaca":
        return bool(record["tools"]) or calls or silent
    return False


def test_random_conversations_round_trip_through_every_format(store, tmp_path):
    rng = random.Random(27)
    records = [random_conversation(rng, i) for i in range(150)]
    key = "generated-0123456789abcdef"
    store.publish_table(key, "ingest", records_to_table(records))
    out = tmp_path / "out"
    targets = [a for fmt in CONVERSATION_FORMATS for a in ("--to", f"{fmt}:{destination(out, fmt)}")]
    code, result, err = sftflow("export", key, *targets, "--multi-turn", "history", "--store", store.url)
    assert code == 0, err
    source = records_to_table(records)
    for entry in result["exports"]:
        fmt = entry["format"]
        kept = [r for r in records if not cannot_hold(r, fmt)]
        assert entry["rows"] == len(kept) and sum(n["count"] for n in entry["left_out"].values()) == \
            len(records) - len(kept), fmt
        for reason, left in entry["left_out"].items():  # reported with the first ids, never silently dropped
            assert left["first_ids"] and all(cannot_hold(next(r for r in records if r["id"] == i), fmt)
                                              for i in left["first_ids"]), (fmt, reason)
        again = read_back(Path(entry["path"]), fmt)
        assert again.column("id").to_pylist() == [r["id"] for r in kept], fmt
        assert conversations(again) == conversations(records_to_table(kept)), fmt
    assert all(not cannot_hold(r, "openai") for r in records) and len({r["id"] for r in records}) == 150
    assert any(r["tools"] for r in records) and any(r["system"] is None for r in records)
    assert conversations(source)  # the generator made what the formats disagree on
    assert 0 < sum(cannot_hold(r, "sharegpt") for r in records) < sum(cannot_hold(r, "alpaca") for r in records)


def test_lineage_columns_travel_with_the_rows(store, tmp_path, demo_key):
    code, result, err = sftflow("export", demo_key, "--to", f"parquet:{tmp_path / 's.parquet'}", "--to",
                                f"openai:{tmp_path / 's.jsonl'}", "--with", "lineage", "--store", store.url)
    assert code == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column_names[:4] == ["id", "source_uri", "source_split", "source_row"]
    first = store.read_table(demo_key).to_pylist()[0]
    row = table.to_pylist()[0]
    assert (row["id"], row["source_uri"], row["source_split"], row["source_row"]) == (
        first["id"], first["source"]["uri"], first["source"]["split"], first["source"]["row"])
    line = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
    assert line["source_row"] == first["source"]["row"] and "messages" in line
    assert read_back(tmp_path / "s.jsonl", "openai").column("id").to_pylist()[0] == first["id"]  # still ingestible


def test_bad_input_is_one_line_exit_2_and_nothing_written(store, tmp_path, demo_key):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "sel.jsonl"

    def refused(*args: str, says: str) -> None:
        code, result, err = sftflow("export", demo_key, *args, "--store", store.url)
        lines = [line for line in err.splitlines() if line.startswith("sftflow export:")]
        assert code == 2 and result["ok"] is False and len(lines) == 1 and says in lines[0], err

    refused("--to", f"yaml:{target}", says="--to expects FORMAT:PATH with FORMAT one of openai, sharegpt")
    blocker = out / "a-file"
    blocker.write_text("not a folder")
    refused("--to", f"openai:{target}", "--to", f"hf:{blocker / 'hf'}", says=f"cannot write {blocker / 'hf'}")
    assert sorted(p.name for p in out.iterdir()) == ["a-file"]  # the first destination was not kept either
    assert sftflow("export", demo_key, "--to", f"openai:{target}", "--store", store.url)[0] == 0
    before = target.read_bytes()
    refused("--to", f"openai:{target}", "--system", "Changed.", says=f"{target} exists: pass --force")
    assert target.read_bytes() == before
    code, _, err = sftflow("export", demo_key, "--to", f"openai:{target}", "--system", "Changed.", "--force",
                           "--store", store.url)
    assert code == 0 and json.loads(target.read_text().splitlines()[0])["messages"][0]["content"] == "Changed."
    store.publish_table("embed-0123456789abcdef", "embed", pa.table({"id": ["a"], "embedding": [[0.1, 0.2]]}))
    code, result, err = sftflow("export", "embed-0123", "--to", f"openai:{out / 'e.jsonl'}", "--store",
                                store.url)
    assert code == 2 and "embed-0123456789abcdef (embed) is not a conversation dataset, it has no source" in err
    assert not (out / "e.jsonl").exists()
    code, result, err = sftflow("export", "nothing-", "--to", f"openai:{out / 'n.jsonl'}", "--store",
                                store.url)
    assert code == 2 and "no such key" in err
    code, result, err = sftflow("export", "ingest-", "--to", f"openai:{out / 'n.jsonl'}", "--store", store.url)
    assert code == 2 and "'ingest-' does not name one dataset" in err and f"{demo_key}-quarantine" in err
    store.publish_table("select-0123456789abcdef", "select", records_to_table([]))
    code, result, err = sftflow("export", "select-0123", "--to", f"hf:{out / 'empty'}", "--store", store.url)
    assert code == 2 and "has no rows to export" in err and not (out / "empty").exists()


def test_exports_to_s3_and_reads_them_back(s3, store, demo_key):
    code, result, err = sftflow("export", demo_key, "--to", "openai:s3://sftflow-test/out/sel.jsonl",
                                "--to", "hf:s3://sftflow-test/out/hf", "--store", store.url)
    assert code == 0, err
    s3.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.ls("sftflow-test/out")) == ["hf", "sel.jsonl",
                                                                               "sel.jsonl.sftflow.json"]
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.ls("sftflow-test/out/hf")) == [
        "README.md", "data-00000-of-00001.arrow", "dataset_info.json", "sftflow.json", "state.json"]
    again = ingest("s3://sftflow-test/out/sel.jsonl")[0]
    assert again.column("id").to_pylist() == store.read_table(demo_key).column("id").to_pylist()


def test_the_export_stage_joins_the_pipeline_only_when_asked(tmp_path):
    import yaml

    from flows.config import load_config
    from flows.plan import pipeline_plan

    demo = ROOT / "demo" / "pipeline.yaml"
    store = Store(str(tmp_path / "store"))
    plain = pipeline_plan(load_config(demo, [f"store={store.url}"]), store)
    assert "export" not in [s.label for s in plain.steps]
    data = yaml.safe_load(demo.read_text())
    for source in data["ingest"]["sources"]:
        source["path"] = str(demo.parent / source["path"])
    data["iqs"]["revisions"] = [str(demo.parent / path) for path in data["iqs"]["revisions"]]
    data["ingest"]["sources"][2]["license"] = "cc-by-4.0"
    data["export"] = ["openai:out/sel.jsonl", "hf:s3://bucket/sel"]  # relative to the YAML's folder
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(yaml.safe_dump(data))
    plan = pipeline_plan(load_config(config_file, [f"store={store.url}"]), store)
    labels = [s.label for s in plan.steps]
    step = next(s for s in plan.steps if s.label == "export")
    assert labels.index("export") == labels.index("select") + 1 and step.upstream[0].label == "select"
    assert [d.path for d in step.params.to] == [str(tmp_path / "out" / "sel.jsonl"), "s3://bucket/sel"]
    assert step.params.licenses == {str(demo.parent / "data" / "alpaca_demo.json"): "cc-by-4.0"}
    assert {s.label: s.key for s in plan.steps if s.label != "export"} == {s.label: s.key for s in plain.steps}
    moved = pipeline_plan(load_config(config_file, [f"store={store.url}", "export.to=[openai:elsewhere.jsonl]"]),
                          store)
    assert next(s for s in moved.steps if s.label == "export").key != step.key  # the destinations are in the key


def test_the_pipeline_exports_as_its_last_step_and_rewrites_what_went_missing(prefect_api, s3, store, tmp_path,
                                                                               tiny_lm):
    """The export stage in the real flow: an S3 and a local destination, the provenance of a real selection, a
    cache hit while the files are there, a rewrite once one is gone, and the selection report's links."""
    from tests.pipeline_runs import pipeline_config, run_flow

    sources = [str(DEMO / name) for name in ("medicationqa_demo.xlsx", "guanaco_demo.jsonl", "alpaca_demo.json")]
    near = json.loads((DEMO / "alpaca_demo.json").read_text())[0]  # a near-duplicate, for dedup to remove
    sources.append(str(tmp_path / "near.json"))
    Path(sources[-1]).write_text(json.dumps([{**near, "instruction": near["instruction"] + " Please."}]))
    config = pipeline_config(store.url, sources, tiny_lm, select={"n1": 10, "n2": 1},
                             iqs={"scorer": "probe", "revisions": [str(ROOT / "demo" / "revisions_demo.jsonl")]},
                             export=["openai:s3://sftflow-test/run/selection.jsonl", f"hf:{tmp_path / 'hf'}"])
    config.ingest.sources[2].license = "cc-by-4.0"
    _, first = run_flow(config, until_stage="export")
    rows = {row["stage"]: row for row in first["stages"]}
    assert first["ok"] and rows["export"]["status"] == "ran" and rows["export"]["rows_in"] == rows["select"]["rows_out"]

    facts = json.loads(s3.cat("sftflow-test/run/selection.jsonl.sftflow.json"))
    assert facts["dataset"] == {**facts["dataset"], "key": rows["select"]["key"], "stage": "select"}
    removed = sum(facts["counts"]["dedup_removed"].values())
    assert removed >= 1 and facts["counts"] == {
        "read": 80, "quarantined": 3, "duplicates": 1, "ingested": 76,
        "dedup_removed": facts["counts"]["dedup_removed"], "deduplicated": 76 - removed,
        "selected": rows["select"]["rows_out"], "dataset": rows["select"]["rows_out"]}
    assert rows["dedup"]["rows_out"] == 76 - removed
    assert facts["selection"]["params"] == {"n1": 10, "n2": 1, "budget": None, "from_file": None, "tokens": None,
                                            "tokens_of": None, "every_row": None, "counting": None}
    assert facts["scoring"] == {"scorer": "probe", "model": facts["scoring"]["model"],
                                "model_key": rows["iqs.train"]["key"], "key": rows["iqs"]["key"]}
    keys = {row["key"] for row in first["stages"] if row["stage"] != "export"}
    assert {s["key"] for s in facts["stages"]} == keys  # every stage upstream, by its store key
    assert [s["license"] for s in facts["sources"]] == [None, None, "cc-by-4.0", None]
    assert facts["license"] == "cc-by-4.0"
    assert [s["checksum"] for s in facts["sources"]] == [hashlib.sha256(Path(p).read_bytes()).hexdigest()
                                                         for p in sources]
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "Scorer `probe`" in card and "| removed by dedup (" in card
    assert f"| select | `{rows['select']['key']}` | {rows['select']['rows_out']} |" in card
    data = s3.cat("sftflow-test/run/selection.jsonl")
    assert len(data.splitlines()) == rows["select"]["rows_out"]

    _, second = run_flow(config, until_stage="export")
    assert {row["stage"]: row["status"] for row in second["stages"]}["export"] == "cached"
    s3.rm("sftflow-test/run/selection.jsonl")  # a cached result is not trusted once its files are gone
    _, third = run_flow(config, until_stage="export")
    assert {row["stage"]: row["status"] for row in third["stages"]}["export"] == "ran"
    s3.invalidate_cache()
    assert s3.cat("sftflow-test/run/selection.jsonl") == data

    code, result, err = sftflow("export", "--to", f"sharegpt:{tmp_path / 'newest.json'}", "--store", store.url)
    assert code == 0 and result["key"] == rows["select"]["key"], err  # no KEY: the newest selection
    code, report, err = sftflow("select", "--report", rows["select"]["key"], "--store", store.url)
    assert code == 0, err
    assert sorted(entry["path"] for entry in report["exports"]) == sorted(
        ["s3://sftflow-test/run/selection.jsonl", str(tmp_path / "hf"), str(tmp_path / "newest.json")])
    companion = f"{rows['dedup']['key']}-removed"  # a companion of conversations: the rows dedup removed
    code, result, err = sftflow("export", companion, "--to", f"openai:{tmp_path / 'removed.jsonl'}", "--store",
                                store.url)
    assert code == 0 and result["exports"][0]["rows"] == removed, err
    quarantine = f"{rows['ingest']['key']}-quarantine"  # raw excerpts of unreadable rows, not conversations
    code, result, err = sftflow("export", quarantine, "--to", f"openai:{tmp_path / 'q.jsonl'}", "--store", store.url)
    assert code == 2 and "(ingest.quarantine) is not a conversation dataset" in err
