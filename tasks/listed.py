"""A selection read from a file (a published one: CaR's 1,013 Alpaca rows, AlpaGasus' 1k, "Long Is More"'s 1k
longest), matched to the pool by what each row asks: its user turns (Alpaca's instruction and input),
normalized as ids are. Where several pool rows ask the same, the one whose answer is the listed answer is
taken, else the first in pool order; each pool row is taken once. Listed rows that match nothing (held out,
removed by dedup, or not in the pool's source at all) are reported, never silently dropped.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from storage.schema import normalize_text
from tasks.evaluate.holdout import user_turns_key

NOT_IN_POOL = "not_in_pool"
LISTED_TWICE = "listed_twice"
UNMATCHED_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def answer_key(messages: list[dict]) -> str:
    return normalize_text(next((m["content"] or "" for m in reversed(messages or []) if m["role"] == "assistant"),
                               ""))


def match_listed(pool: pa.Table, listed: pa.Table) -> tuple[np.ndarray, pa.Table, dict[str, int]]:
    """(the pool rows of the listed rows, in the file's order; the listed rows matched to none, with the reason;
    counts)."""
    candidates: dict[str, list[int]] = defaultdict(list)
    pool_rows = pool.select(["messages"]).to_pylist()
    for i, row in enumerate(pool_rows):
        candidates[user_turns_key(row["messages"])].append(i)
    taken: set[int] = set()
    rows, unmatched = [], []
    same_answer = 0
    for row in listed.select(["id", "messages"]).to_pylist():
        free = [i for i in candidates.get(user_turns_key(row["messages"]), []) if i not in taken]
        if not free:
            asked = candidates.get(user_turns_key(row["messages"]))
            reason = LISTED_TWICE if asked else NOT_IN_POOL
            detail = ("every pool row asking this is listed already" if asked else
                      "no pool row asks this (held out, removed by dedup, or not in the pool's source)")
            unmatched.append({"id": row["id"], "reason": reason, "detail": detail})
            continue
        answer = answer_key(row["messages"])
        exact = [i for i in free if answer_key(pool_rows[i]["messages"]) == answer]
        same_answer += bool(exact)
        chosen = (exact or free)[0]
        taken.add(chosen)
        rows.append(chosen)
    counts = {"listed": listed.num_rows, "matched": len(rows), "matched_same_answer": same_answer,
              "unmatched": len(unmatched)}
    return np.asarray(rows, dtype=np.int64), pa.Table.from_pylist(unmatched, UNMATCHED_SCHEMA), counts
