"""oasst1 message trees (one row per message, linked by parent_id) flattened into conversations.

Like timdettmers/openassistant-guanaco: per tree, follow the highest-ranked reply (rank 0 first, unranked
last) from the root prompt down, skipping deleted messages; one conversation per tree.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tasks.ingest.formats import OASST_ROLES, Conversation, FormatOptions, conversation, role_of
from tasks.ingest.quarantine import Rejected


def parse_oasst1(items: Iterable[tuple[int, Mapping[str, Any]]], opts: FormatOptions
                 ) -> Iterator[tuple[int, Conversation | Rejected, Any]]:
    nodes: dict[Any, tuple[int, Mapping[str, Any]]] = {}
    children: dict[Any, list[Any]] = defaultdict(list)
    roots = []
    for row, message in items:
        mid = message.get("message_id")
        nodes[mid] = (row, message)
        if message.get("parent_id") is None:
            roots.append(mid)
        else:
            children[message["parent_id"]].append(mid)

    def best_reply(mid: Any) -> Any:
        replies = [c for c in children.get(mid, ()) if not nodes[c][1].get("deleted")]
        if not replies:
            return None
        return min(replies, key=lambda c: (nodes[c][1].get("rank") is None, nodes[c][1].get("rank") or 0, nodes[c][0]))

    for root in roots:
        row, message = nodes[root]
        path, node = [message], best_reply(root)
        while node is not None:
            path.append(nodes[node][1])
            node = best_reply(node)
        try:
            if message.get("deleted"):
                raise Rejected("deleted", "deleted", "the root message is marked deleted")
            turns = [(role_of(m.get("role"), OASST_ROLES, "role"), m.get("text"), "text") for m in path]
            meta = {"message_tree_id": message.get("message_tree_id") or root, "lang": message.get("lang"),
                    "message_ids": [m.get("message_id") for m in path]}
            yield row, conversation(turns, opts.system_prompt, meta), message
        except Rejected as rejected:
            yield row, rejected, message
