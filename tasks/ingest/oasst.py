"""OpenAssistant message trees flattened into conversations, one per tree, by one rule for every layout.

Like timdettmers/openassistant-guanaco: from the root prompt down, follow the highest-ranked reply (rank 0
first, unranked last, then the order of the replies); deleted messages and those that failed review are
skipped and counted (stats "skipped_messages"); a tree whose prompt is deleted or failed review is
quarantined. Layouts: the flat Hugging Face one (`oasst1`: one row per message, linked by parent_id) and
OpenAssistant's own exports (`oasst-trees`: `*.trees.jsonl` lines `{message_tree_id, tree_state, prompt: {…,
replies: [nested]}}`, and message files whose records carry nested `replies`). The tree's `lang`,
`message_tree_id` (and `tree_state`) and the message ids followed are kept in meta.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tasks.ingest.quarantine import Rejected
from tasks.ingest.turns import Conversation, Turn, conversation, role_of

if TYPE_CHECKING:
    from tasks.ingest.formats import FormatOptions

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
Replies = Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]]


def unusable(message: Mapping[str, Any]) -> str | None:
    """Why a message is left out: deleted, or failed review (review_result false; unreviewed ones are kept)."""
    if message.get("deleted"):
        return "deleted"
    if message.get("review_result") is False:
        return "failed_review"
    return None


def best_path(root: Mapping[str, Any], replies_of: Replies) -> tuple[list[Mapping[str, Any]], Counter[str]]:
    """The messages followed from the root, and the replies skipped on the way by reason."""
    path, skipped, node = [root], Counter(), root
    while True:
        ranked = []
        for position, reply in enumerate(replies_of(node)):
            reason = unusable(reply)
            if reason:
                skipped[reason] += 1
            else:
                ranked.append((reply.get("rank") is None, reply.get("rank") or 0, position))
        if not ranked:
            return path, skipped
        node = replies_of(node)[min(ranked)[2]]
        path.append(node)


def tree_conversation(root: Mapping[str, Any], replies_of: Replies, opts: FormatOptions,
                      meta: dict[str, Any]) -> Conversation:
    reason = unusable(root)
    if reason:
        raise Rejected(reason, "deleted" if reason == "deleted" else "review_result",
                       f"the root message is {'marked deleted' if reason == 'deleted' else 'one that failed review'}")
    path, skipped = best_path(root, replies_of)
    turns = [Turn(role_of(m.get("role"), OASST_ROLES, "role"), m.get("text"), "text") for m in path]
    meta = {**meta, "lang": root.get("lang"), "message_ids": [m.get("message_id") for m in path]}
    result = conversation(turns, opts.system_prompt, meta, repair=opts.repair)
    result.skipped = dict(skipped)
    return result


def parse_oasst1(items: Iterable[tuple[int, Mapping[str, Any]]], opts: FormatOptions
                 ) -> Iterator[tuple[int, Conversation | Rejected, Any]]:
    """The flat layout: every row first (a reply may come before its parent), then one conversation per root."""
    rows: dict[Any, int] = {}
    children: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    roots = []
    for row, message in items:
        rows[message.get("message_id")] = row
        if message.get("parent_id") is None:
            roots.append(message)
        else:
            children[message["parent_id"]].append(message)

    def replies_of(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return children.get(message.get("message_id"), [])

    for root in roots:
        meta = {"message_tree_id": root.get("message_tree_id") or root.get("message_id")}
        try:
            yield rows[root.get("message_id")], tree_conversation(root, replies_of, opts, meta), root
        except Rejected as rejected:
            yield rows[root.get("message_id")], rejected, root


def nested_replies(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    replies = message.get("replies") or []
    if not isinstance(replies, list) or not all(isinstance(r, Mapping) for r in replies):
        raise Rejected("bad_structure", "replies", "replies must be a list of messages")
    return replies


def parse_oasst_tree(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """One line of a trees file (`prompt` holds the root), or one message node with its replies nested."""
    root = obj["prompt"] if "prompt" in obj else obj
    if not isinstance(root, Mapping):
        raise Rejected("bad_structure", "prompt", "the prompt must be a message object")
    meta: dict[str, Any] = {"message_tree_id": obj.get("message_tree_id") or root.get("message_tree_id")
                            or root.get("message_id")}
    if obj.get("tree_state") is not None:
        meta["tree_state"] = obj["tree_state"]
    yield tree_conversation(root, nested_replies, opts, meta)
