"""Warnings after an ingest: a quarantine reason that takes more than WARN_SHARE of a source's conversations is
named with the option that would repair or read those rows (printed by the CLI, in the stats' `warnings` and
the stage report)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WARN_SHARE = 0.05
ASKED_FOR = frozenset(("filtered_lang",))  # set aside because the user asked: never a warning
LOOK = "see the quarantine's detail column (the dataset's -quarantine companion)"
REPAIR = "--repair (source option repair: true) drops leading assistant turns and merges same-role turns"


def hint(reason: str, repair: bool) -> str:
    """What to do about rows quarantined for `reason`."""
    if reason == "not_alternating":
        return REPAIR if not repair else ("the turn order is broken in a way repair does not fix (a system turn "
                                          f"inside, a tool result without a call); {LOOK}")
    if reason == "unsupported_role":
        return ("--repair reads chatgpt/bing/bard/model turns as assistant turns" if not repair
                else f"the role names are not ShareGPT's or OpenAI's; {LOOK}")
    if reason == "no_user_turn":
        return f"these conversations hold only answers (every turn comes before the first user turn); {LOOK}"
    return {
        "preference_record": "--preference chosen (source option preference: chosen) takes the chosen answer as "
                             "the assistant turn and keeps the rejected one in meta",
        "no_assistant_turn": "prompts without answers: if the answers are in other fields, pass --format, or "
                             "--map input=COLUMN --map output=COLUMN",
        "malformed_json": "is it JSON Lines? a file of one JSON document should be .json",
        "not_an_object": "the records are not JSON objects (a JSONL line may also be a list of messages)",
        "unsupported_content": "only text and tool_call content parts are read (images and the like are not)",
        "unsupported_loss_weight": "only loss weights 0 and 1 on assistant turns are honoured",
        "bad_tool_call": "a tool call must be JSON with a name and arguments (ShareGPT's function_call value, "
                         f"OpenAI's tool_calls); {LOOK}",
        "bad_tools": f"tools must be a JSON list of function definitions, each with a name; {LOOK}",
        "bad_structure": f"--format names the layout if detection guessed wrong; {LOOK}",
        "missing_field": "--map input=COLUMN --map output=COLUMN names the columns",
        "deleted": "OpenAssistant trees whose prompt was deleted: expected, nothing to read",
        "failed_review": "OpenAssistant trees whose prompt failed review: expected, nothing to read",
    }.get(reason, f"empty turns cannot be repaired; {LOOK}" if reason.startswith("empty_") else LOOK)


def quarantine_warnings(stats: Mapping[str, Any], repair: bool) -> list[str]:
    """One line per quarantine reason above WARN_SHARE of the conversations read."""
    read = stats.get("read") or 0
    lines = []
    for reason, count in stats.get("quarantined", {}).items():
        if reason not in ASKED_FOR and read and count / read > WARN_SHARE:
            lines.append(f"{count} of {read} conversations ({count / read:.0%}) quarantined as {reason}: "
                         f"{hint(reason, repair)}")
    return lines
