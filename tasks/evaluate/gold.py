"""A "gold" evaluation set: the expert-revised responses of CaR's revision pairs as canonical conversations.

Each pair's revised side ("Instruction: … [Input: …] Response: …", read by `tasks.iqs.revisions`) becomes
user = the instruction (+ a blank line and the input, as Alpaca rows are ingested) and assistant = the revised
response, with `instruction` and `input` in meta like an ingested Alpaca row, so it is formatted and evaluated
like any other set. The raw sides are not used: they are what the experts corrected.

`source.row` is the revision's 0-based data row in CaR's `src,score` CSV (2 x pair + 1), or the pair's
record in the JSON layout. A revision whose text cannot be split back unambiguously, or whose response is
empty, goes to the quarantine; so does a repeat of an earlier revision (the same conversation, the same id).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.schema import make_record, records_to_table
from tasks.ingest.quarantine import EXCERPT_CHARS, QUARANTINE_SCHEMA
from tasks.iqs.revisions import read_revisions
from tasks.text import alpaca_user_content

GOLD_FORMAT = "car_revised"
_CAR_VIEW = re.compile(r"Instruction:\s(?P<instruction>.*?)(?:\sInput:\s(?P<input>.*?))?\sResponse:\s?(?P<response>.*)",
                       re.DOTALL)
_LABEL = re.compile(r"\s(?:Input|Response):")


class Unsplittable(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def parse_car_view(text: str) -> tuple[str, str, str]:
    """(instruction, input, response) of "Instruction: … [Input: …] Response: …", or Unsplittable."""
    found = _CAR_VIEW.fullmatch(text.strip())
    if found is None:
        raise Unsplittable("not_car_view", "expected 'Instruction: … [Input: …] Response: …'")
    instruction, input_text, response = (found.group(g) or "" for g in ("instruction", "input", "response"))
    head = f"{instruction} {input_text}"
    if _LABEL.search(head):
        raise Unsplittable("ambiguous_labels", "the instruction or input itself contains ' Input:' or "
                           "' Response:', so where each part ends is unknown")
    if not response.strip():
        raise Unsplittable("empty_response", "the revised response is empty")
    return instruction.strip(), input_text.strip(), response.strip()


def read_gold(path: str | Path) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """(canonical conversations, quarantine, counts) of the revised side of every pair in `path`."""
    pairs, layout = read_revisions(path)
    uri = str(path)
    records, quarantined, seen = [], [], set()
    for index, pair in enumerate(pairs):
        row = 2 * index + 1 if layout == "pairs_csv" else index
        try:
            instruction, input_text, response = parse_car_view(pair.revised)
        except Unsplittable as exc:
            quarantined.append({"uri": uri, "row": row, "field": "src", "reason": exc.reason, "detail": exc.detail,
                                "excerpt": pair.revised[:EXCERPT_CHARS]})
            continue
        record = make_record(messages=[{"role": "user", "content": alpaca_user_content(instruction, input_text)},
                                       {"role": "assistant", "content": response}],
                             system=None, uri=uri, fmt=GOLD_FORMAT, row=row,
                             meta={"instruction": instruction, "input": input_text})
        if record["id"] in seen:
            quarantined.append({"uri": uri, "row": row, "field": "src", "reason": "duplicate",
                                "detail": f"the same conversation as an earlier revision (id {record['id']})",
                                "excerpt": pair.revised[:EXCERPT_CHARS]})
            continue
        seen.add(record["id"])
        records.append(record)
    counts = {"pairs_read": len(pairs), "rows": len(records), "quarantined": len(quarantined)}
    return records_to_table(records), pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA), counts
