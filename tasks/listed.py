"""A selection read from a file (a published one: CaR's 1,013 Alpaca rows, AlpaGasus' 1k, "Long Is More"'s 1k
longest), matched to the pool by what each row asks: its user turns (Alpaca's instruction and input),
normalized as ids are. Where several pool rows ask the same, the one whose answer is the listed answer is
taken, else the first in pool order; each pool row is taken once. Listed rows that match nothing (held out,
removed by dedup, or not in the pool's source at all) are reported, never silently dropped.

Published FastChat-format selections (AlpaGasus' 1k, "Long Is More"'s 1k) wrap each instruction in Alpaca's
prompt inside the human turn, with every newline collapsed to a space. A row that does not match as it is is
matched loosely: unwrapped from Alpaca's prompt (preamble, `### Instruction:`, `### Input:`), whitespace ignored,
and an input that only says there is none (`<noinput>`, "No input required.", a stray "." or "``": the Alpaca
releases differ in these) taken as no input on both sides. The counts say how many matched so.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pyarrow as pa

from storage.schema import normalize_text
from tasks.evaluate.holdout import user_turns_key
from tasks.templates import ALPACA_INPUT, ALPACA_NO_INPUT
from tasks.text import alpaca_user_content

LISTED_MATCHING = 2  # the matching rule's version, in the key of a selection read from a file
NOT_IN_POOL = "not_in_pool"
LISTED_TWICE = "listed_twice"
UNMATCHED_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


PREAMBLE = f"(?:{re.escape(ALPACA_INPUT)}|{re.escape(ALPACA_NO_INPUT)})"
ALPACA_PROMPT = re.compile(rf"\s*{PREAMBLE}\s*### Instruction:\s*(?P<instruction>.*?)"
                           r"(?:\s*### Input:\s*(?P<input>.*?))?(?:\s*### Response:)?\s*$", re.DOTALL)


NO_INPUT = re.compile(r"[\W_]*(?:no ?input(?: required)?|none|n/?a)?[\W_]*", re.IGNORECASE)


def loose_key(text: str) -> str:
    """What a user turn asks, its whitespace ignored (newlines collapsed to spaces match the original) and a
    placeholder input (after the last blank line) dropped."""
    instruction, _, tail = text.rpartition("\n\n")
    if instruction and NO_INPUT.fullmatch(tail):
        text = instruction
    return " ".join(text.split())


def unwrapped_key(messages: list[dict]) -> str | None:
    """The loose key of the user turn inside Alpaca's prompt (None: a single user turn not wrapped so)."""
    users = [m["content"] or "" for m in messages or [] if m["role"] == "user"]
    found = ALPACA_PROMPT.match(users[0]) if len(users) == 1 else None
    return loose_key(alpaca_user_content(found["instruction"], found["input"] or "")) if found else None


def answer_key(messages: list[dict]) -> str:
    return normalize_text(next((m["content"] or "" for m in reversed(messages or []) if m["role"] == "assistant"),
                               ""))


def match_listed(pool: pa.Table, listed: pa.Table) -> tuple[np.ndarray, pa.Table, dict[str, int]]:
    """(the pool rows of the listed rows, in the file's order; the listed rows matched to none, with the reason;
    counts)."""
    candidates: dict[str, list[int]] = defaultdict(list)
    loose: dict[str, list[int]] = defaultdict(list)
    pool_rows = pool.select(["messages"]).to_pylist()
    for i, row in enumerate(pool_rows):
        candidates[user_turns_key(row["messages"])].append(i)
        loose[loose_key(user_turns_key(row["messages"]))].append(i)
    taken: set[int] = set()
    rows, unmatched = [], []
    same_answer = loosely = 0
    for row in listed.select(["id", "messages"]).to_pylist():
        asked = candidates.get(user_turns_key(row["messages"]))
        if not asked:
            asked = loose.get(unwrapped_key(row["messages"]) or loose_key(user_turns_key(row["messages"])))
            loosely += bool(asked)
        free = [i for i in asked or [] if i not in taken]
        if not free:
            reason = LISTED_TWICE if asked else NOT_IN_POOL
            detail = ("every pool row asking this is listed already" if asked else
                      "no pool row asks this (held out, removed by dedup, or not in the pool's source)")
            unmatched.append({"id": row["id"], "reason": reason, "detail": detail})
            continue
        answer = loose_key(answer_key(row["messages"]))
        exact = [i for i in free if loose_key(answer_key(pool_rows[i]["messages"])) == answer]
        same_answer += bool(exact)
        chosen = (exact or free)[0]
        taken.add(chosen)
        rows.append(chosen)
    counts = {"listed": listed.num_rows, "matched": len(rows), "matched_same_answer": same_answer,
              "matched_loosely": loosely, "unmatched": len(unmatched)}
    return np.asarray(rows, dtype=np.int64), pa.Table.from_pylist(unmatched, UNMATCHED_SCHEMA), counts
