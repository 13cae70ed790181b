"""The selection explorer: one self-contained HTML page to look at a selection instead of reading tables.

Every row of the clusters table is a point of the 2-D map (PC1, PC2) coloured by cluster, the selected rows
outlined; hover shows the instruction, the answer's start, the score and the reason; filters by cluster, reason
and score range; a table lists the selected rows with their lineage (source file, sheet or split, row). plotly.js
comes from the `plotly` package's offline bundle and is inlined, so the page makes no network request.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import BadInputError

EXPLORER_FILE = "explorer.html"
TEMPLATE = Path(__file__).with_name("explorer_page.html")
INSTRUCTION_CHARS, ANSWER_CHARS = 240, 160  # excerpts kept per row: the page carries every row's text
REASONS = ("top_score", "cluster_top", "listed", "every_row")  # as tasks.select writes them, best first


def excerpt(text: str | None, chars: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= chars else text[:chars].rstrip() + "…"


def first_turns(messages: list[dict[str, str]] | None) -> tuple[str | None, str | None]:
    """The first user turn (the instruction, with Alpaca's input) and the first assistant turn."""
    user = next((m["content"] for m in messages or [] if m["role"] == "user"), None)
    answer = next((m["content"] for m in messages or [] if m["role"] == "assistant"), None)
    return user, answer


def _positions(ids: pa.ChunkedArray, within: pa.ChunkedArray, what: str) -> np.ndarray:
    """Index in `within` of every id; an id that is not there is bad input (the tables are of different runs)."""
    where = pc.index_in(ids, value_set=within)
    if where.null_count:
        bad = int(np.flatnonzero(where.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadInputError(f"{where.null_count} row(s) not in the {what}; the first is id {ids[bad]} (are the "
                            "tables from different runs?)", row=bad, field="id")
    return where.to_numpy(zero_copy_only=False).astype(np.int64)


def explorer_data(clusters: pa.Table, selection: pa.Table, conversations: pa.Table,
                  scored: pa.Table | None = None) -> dict[str, Any]:
    """What the page draws, as columns: one point per clusters row, then the selected rows in selection order."""
    ids = clusters.column("id")
    text_at = _positions(ids, conversations.column("id"), "conversations")
    messages = conversations.column("messages").take(pa.array(text_at)).to_pylist()
    turns = [first_turns(m) for m in messages]
    if scored is not None:
        score = pc.cast(scored.column("iqs_score"), pa.float64()).to_numpy(zero_copy_only=False)[
            _positions(ids, scored.column("id"), "scores")]
    else:
        score = np.full(len(ids), np.nan)
    point_of = _positions(selection.column("id"), ids, "clusters table")  # selected row -> point
    reason_code = {reason: i for i, reason in enumerate(REASONS)}
    reason = np.full(len(ids), -1, dtype=np.int64)
    reason[point_of] = [reason_code[r] for r in selection.column("selection_reason").to_pylist()]
    source = selection.column("source").combine_chunks()
    finite = score[np.isfinite(score)]
    return {
        "reasons": list(REASONS),
        "scored": scored is not None,
        "score_range": [round(float(finite.min()), 4), round(float(finite.max()), 4)] if len(finite) else None,
        "points": {
            "id": ids.to_pylist(),
            "x": np.round(clusters.column("pc1").to_numpy(zero_copy_only=False).astype(np.float64), 4).tolist(),
            "y": np.round(clusters.column("pc2").to_numpy(zero_copy_only=False).astype(np.float64), 4).tolist(),
            "cluster": clusters.column("cluster").to_numpy(zero_copy_only=False).astype(np.int64).tolist(),
            "score": [None if not np.isfinite(s) else round(float(s), 4) for s in score],
            "reason": reason.tolist(),
            "instruction": [excerpt(user, INSTRUCTION_CHARS) for user, _ in turns],
            "answer": [excerpt(answer, ANSWER_CHARS) for _, answer in turns],
        },
        "selected": {
            "point": point_of.tolist(),
            "rank": selection.column("iqs_rank").to_pylist(),
            "uri": source.field("uri").to_pylist(),
            "split": source.field("split").to_pylist(),
            "row": source.field("row").to_pylist(),
        },
    }


def explorer_html(clusters: pa.Table, selection: pa.Table, conversations: pa.Table, scored: pa.Table | None = None,
                  title: str = "selection") -> str:
    """The explorer page for a selection (tables as the select stage has them; `scored` None: no IQS scores)."""
    from plotly.offline import get_plotlyjs

    data = explorer_data(clusters, selection, conversations, scored)
    data["title"] = title
    # "<" escaped: no text from the data can close the script element it sits in
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = TEMPLATE.read_text()
    return page.replace("/*PLOTLY_JS*/", get_plotlyjs()).replace("/*EXPLORER_DATA*/", payload)
