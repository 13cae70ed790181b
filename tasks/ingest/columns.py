"""Canonical records collected column by column: one list per field, turned into Arrow arrays per batch.

Equivalent to `records_to_table([make_record(...), ...])` (the same normalization and ids, storage.schema),
without a dict per record and per message, which made building the table the costliest part of ingest. The
tool and loss-weight fields most records lack are kept sparse (by message index) and written as nulls.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from storage.schema import (
    CONVERSATION_SCHEMA,
    MESSAGE_TYPE,
    SOURCE_TYPE,
    TOOL_CALL_TYPE,
    meta_json,
    normalize_conversation,
    normalize_system,
    normalize_text,
    normalized_id,
)
from tasks.ingest.arrow import floats, numbers, repeated, strings

if TYPE_CHECKING:
    from tasks.ingest.turns import Conversation

MESSAGES_TYPE = CONVERSATION_SCHEMA.field("messages").type


class RecordColumns:
    """The records of one source (uri, format and split are shared), appended one conversation at a time."""

    def __init__(self, uri: str, fmt: str, split: str | None) -> None:
        self.uri, self.fmt, self.split = uri, fmt, split
        self.ids: list[str] = []
        self.rows: list[int] = []
        self.systems: list[str | None] = []
        self.metas: list[str] = []
        self.offsets: list[int] = [0]  # messages of record i: roles/contents[offsets[i]:offsets[i + 1]]
        self.roles: list[str] = []
        self.contents: list[str] = []
        self.tools: list[str | None] = []
        self.extras: dict[int, dict[str, Any]] = {}  # message index -> tool calls / call id / loss weight
        self.repairs: Counter[str] = Counter()  # what the repair policy did, summed over the records
        self.skipped: Counter[str] = Counter()  # messages left out of the records (OpenAssistant trees)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, row: int, conversation: Conversation) -> None:
        record = normalize_conversation(conversation.system, conversation.messages, conversation.tools)
        self.ids.append(record.id)
        self.rows.append(row)
        self.systems.append(record.system)
        self.tools.append(record.tools)
        self.metas.append(meta_json(conversation.meta))
        if record.extras:
            first = len(self.contents)
            self.extras.update((first + i, extra) for i, extra in enumerate(record.extras) if extra)
        for role, content in record.turns:
            self.roles.append(role)
            self.contents.append(content)
        self.offsets.append(len(self.contents))
        if conversation.repairs:
            self.repairs.update(conversation.repairs)
            self.repairs["conversations"] += 1
        if conversation.skipped:
            self.skipped.update(conversation.skipped)

    def add_pairs(self, rows: Sequence[int], systems: Sequence[str | None], users: Sequence[str],
                  answers: Sequence[str], metas: Sequence[str]) -> None:
        """Many (user, assistant) records a column at a time: the same as `add` for each (metas already written
        by `meta_json`), with less overhead."""
        users = [normalize_text(text) for text in users]
        answers = [normalize_text(text) for text in answers]
        sys_texts = [normalize_system(system) for system in systems]
        self.ids += [normalized_id(system or "", [["user", user], ["assistant", answer]])
                     for system, user, answer in zip(sys_texts, users, answers)]
        self.rows += rows
        self.systems += sys_texts
        self.tools += [None] * len(users)
        self.metas += metas
        contents: list[str] = [""] * (2 * len(users))
        contents[0::2], contents[1::2] = users, answers
        self.contents += contents
        self.roles += ["user", "assistant"] * len(users)
        end = self.offsets[-1]
        self.offsets += range(end + 2, end + 2 * len(users) + 1, 2)

    def table(self) -> pa.Table:
        """The records as a CONVERSATION_SCHEMA table, in source row order."""
        n = len(self.ids)
        source = pa.StructArray.from_arrays(
            [repeated(self.uri, n), repeated(self.fmt, n), repeated(self.split, n), numbers(self.rows)],
            fields=list(SOURCE_TYPE))
        turns = pa.StructArray.from_arrays([strings(self.roles), strings(self.contents), *self._extra_arrays()],
                                           fields=list(MESSAGE_TYPE))
        messages = pa.ListArray.from_arrays(numbers(self.offsets, np.int32), turns, type=MESSAGES_TYPE)
        table = pa.Table.from_arrays([strings(self.ids), source, strings(self.systems), messages, strings(self.metas),
                                      strings(self.tools)], schema=CONVERSATION_SCHEMA)
        order = np.argsort(np.asarray(self.rows, dtype=np.int64), kind="stable")
        sorted_already = bool((order == np.arange(n)).all())
        return table if sorted_already else table.take(numbers(order))

    def _extra_arrays(self) -> list[pa.Array]:
        """tool_calls, tool_call_id and loss_weight of every message (all null when no record has them)."""
        count = len(self.contents)
        if not self.extras:
            return [pa.nulls(count, MESSAGE_TYPE.field(name).type) for name in ("tool_calls", "tool_call_id",
                                                                                 "loss_weight")]
        column = [self.extras.get(i, {}) for i in range(count)]
        return [pa.array([e.get("tool_calls") for e in column], pa.list_(TOOL_CALL_TYPE)),
                strings([e.get("tool_call_id") for e in column]), floats([e.get("loss_weight") for e in column])]
