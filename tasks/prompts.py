"""Prompt sets: what a model is asked to answer when its answers are judged.

Named sets are the ones the field judges on: AlpacaEval's 805 prompts (AlpacaEval 1.0 and 2.0) and the five test
sets of "Long Is More for Alignment" (Vicuna 80, Koala 180, WizardLM 218, Self-Instruct 252, LIMA 300). Each is
read from `$SFTFLOW_PROMPT_SETS/<file>` when that folder holds it (a copy made once, or a shared mount: nothing
here needs a network), else from its public address. Any other file is read as ingest reads it; the first user
turn of each record is the prompt. Records that hold only a prompt (no answer: ingest would quarantine them)
give it from their conversation's first user turn or from a prompt field (`instruction` with its `input`,
`prompt`, `question`, `query`, `text`). A record with neither goes to the quarantine; a file with no prompt at
all is bad input.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.schema import make_record, records_to_table
from tasks.errors import BadInputError
from tasks.text import alpaca_user_content

PROMPT_SETS_ENV = "SFTFLOW_PROMPT_SETS"
LONG_IS_MORE = "https://raw.githubusercontent.com/tml-epfl/long-is-more-for-alignment/5466f17/data/test/"
PROMPT_FIELDS = ("prompt", "question", "query", "text")
USER_ROLES = ("user", "human")


@dataclass(frozen=True)
class PromptSet:
    name: str
    file: str  # relative to $SFTFLOW_PROMPT_SETS
    url: str  # where an online user reads it
    description: str
    # fields of a record holding a reference answer, best first (kept in each prompt's meta): what the set's own
    # leaderboard judges answers against
    references: tuple[str, ...] = ()

    def location(self) -> str:
        folder = os.environ.get(PROMPT_SETS_ENV)
        if folder and (Path(folder) / self.file).is_file():
            return str(Path(folder) / self.file)
        return self.url


PROMPT_SETS = {s.name: s for s in (
    PromptSet("alpacaeval", "alpacaeval/prompts.jsonl.gz",
              "https://huggingface.co/datasets/tatsu-lab/alpaca_eval/resolve/main/alpaca_eval.json",
              "AlpacaEval's 805 prompts (AlpacaEval 1.0 and 2.0)",
              # GPT-4-turbo's answers (AlpacaEval 2.0's reference; our copy), text-davinci-003's (1.0's; the address)
              references=("reference_output", "output")),
    PromptSet("vicuna", "test-prompts/vicuna_test_set.jsonl", LONG_IS_MORE + "vicuna_test_set.jsonl",
              "Vicuna's 80 questions (FastChat)"),
    PromptSet("koala", "test-prompts/koala_test_set.jsonl", LONG_IS_MORE + "koala_test_set.jsonl",
              "Koala's 180 prompts (BAIR)"),
    PromptSet("wizardlm", "test-prompts/wizardlm_test_set.jsonl", LONG_IS_MORE + "wizardlm_test_set.jsonl",
              "WizardLM's 218 instructions"),
    PromptSet("sinstruct", "test-prompts/sinstruct_test_set.jsonl", LONG_IS_MORE + "sinstruct_test_set.jsonl",
              "Self-Instruct's 252 user-oriented instructions"),
    PromptSet("lima", "test-prompts/lima_test.jsonl", LONG_IS_MORE + "lima_test.jsonl", "LIMA's 300 test prompts"),
)}


def named(name: str) -> PromptSet:
    found = PROMPT_SETS.get(name)
    if found is None:
        raise BadInputError(f"no prompt set {name!r}; the named sets are {', '.join(PROMPT_SETS)} (or give a file "
                            "of prompts in any format ingest reads)", field="prompts.set")
    return found


def first_user_turn(record: Mapping[str, Any]) -> str | None:
    """The prompt of a record that holds no answer: its conversation's first user turn, else a prompt field."""
    for key in ("messages", "conversations", "conversation", "turns"):
        turns = record.get(key)
        if isinstance(turns, list):
            for turn in turns:
                if isinstance(turn, str):  # LIMA, MT-Bench: a list of texts, the user's first
                    return turn
                if isinstance(turn, Mapping):
                    role = turn.get("role") or turn.get("from")
                    if role in USER_ROLES or (role is None and "input" in turn):
                        return turn.get("content") or turn.get("value") or turn.get("input")
    instruction = record.get("instruction") or record.get("Instruction")
    if isinstance(instruction, str) and instruction.strip():
        instances = record.get("instances")
        given = record.get("input") or (instances[0].get("input") if isinstance(instances, list) and instances
                                        and isinstance(instances[0], Mapping) else None)
        return alpaca_user_content(instruction.strip(), (given or "").strip())
    return next((record[k] for k in PROMPT_FIELDS if isinstance(record.get(k), str) and record[k].strip()), None)


@dataclass
class PromptsRead:
    table: pa.Table
    quarantine: pa.Table
    read: int


QUARANTINE_SCHEMA = pa.schema([("row", pa.int64()), ("reason", pa.string()), ("detail", pa.string())])


def read_prompts(path: str, label: str, fmt: str | None = None, limit: int | None = None) -> PromptsRead:
    """One canonical row per prompt (a single user turn; meta: the set, the record's own id and fields)."""
    from tasks.ingest.config import SourceConfig
    from tasks.ingest.formats import detect_format, options_for
    from tasks.ingest.parse import conversations
    from tasks.ingest.quarantine import Unreadable
    from tasks.ingest.source import open_source

    items, given, _, _, _ = open_source(SourceConfig(path=path, format=fmt))
    records, rejected, read = [], [], 0
    parse_format = given
    for row, obj in _limited(items, limit):
        read += 1
        if isinstance(obj, Unreadable):
            rejected.append({"row": row, "reason": "unreadable", "detail": str(obj.detail)[:200]})
            continue
        if parse_format is None and isinstance(obj, Mapping):
            parse_format = detect_format(obj) or "none"
        prompt = _parsed_prompt(row, obj, parse_format, options_for, conversations) if isinstance(obj, Mapping) \
            else None
        if prompt is None and isinstance(obj, Mapping):
            prompt = first_user_turn(obj)
        if not isinstance(prompt, str) or not prompt.strip():
            rejected.append({"row": row, "reason": "no_user_turn", "detail": "no user turn and no prompt field "
                             f"({', '.join(['instruction', *PROMPT_FIELDS])})"})
            continue
        own = {k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool)) and k not in ("output",)}
        records.append(make_record(messages=[{"role": "user", "content": prompt}], system=None, uri=path,
                                   fmt="prompts", row=row, meta={"prompt_set": label, **own}))
    if not records:
        raise BadInputError(f"no prompt in {read} record(s): each needs a user turn or a prompt field "
                            f"({', '.join(['instruction', *PROMPT_FIELDS])})", file=path, field="prompts")
    return PromptsRead(records_to_table(records), pa.Table.from_pylist(rejected, QUARANTINE_SCHEMA), read)


def held_out_prompts(rows: pa.Table, label: str, limit: int | None = None) -> PromptsRead:
    """The questions of held-out conversation rows (eval.holdout's): the first user turn of each, its source
    row's lineage and id kept (meta `held_out_id`), so answers on a user's own data can be judged."""
    records, rejected = [], []
    for n, row in enumerate(rows.select(["id", "source", "messages"]).to_pylist()[:limit]):
        prompt = next((m["content"] for m in row["messages"] or [] if m["role"] == "user"), None)
        if not prompt or not prompt.strip():
            rejected.append({"row": n, "reason": "no_user_turn", "detail": f"held-out row {row['id']} asks nothing"})
            continue
        source = row["source"] or {}
        records.append(make_record(messages=[{"role": "user", "content": prompt}], system=None,
                                   uri=source.get("uri") or "", fmt="prompts", row=source.get("row") or n,
                                   meta={"prompt_set": label, "held_out_id": row["id"]}))
    if not records:
        raise BadInputError(f"none of the {rows.num_rows} held-out rows has a user turn to ask", field="prompts")
    return PromptsRead(records_to_table(records), pa.Table.from_pylist(rejected, QUARANTINE_SCHEMA), rows.num_rows)


def _limited(items: Iterator[tuple[int, Any]], limit: int | None) -> Iterator[tuple[int, Any]]:
    for n, item in enumerate(items):
        if limit is not None and n >= limit:
            return
        yield item


def _parsed_prompt(row: int, obj: Mapping[str, Any], fmt: str, options_for: Any, conversations: Any) -> str | None:
    """The first user turn of the record as ingest parses it (None where ingest rejects it, e.g. no answer)."""
    if fmt == "none":
        return None
    for _, result, _ in conversations([(row, obj)], fmt, options_for(fmt, None, None)):
        messages = getattr(result, "messages", None)
        if messages:
            return next((m["content"] for m in messages if m["role"] == "user"), None)
        return None
    return None
