"""Records in the layouts real projects publish (issue 19), built from their descriptions and the projects'
docs: ShareGPT V3's "split" file, OpenAssistant's exports, LLaMA-Factory's v1 and tool-calling demo data."""
from __future__ import annotations

import json


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": text} for who, text in pairs]


def sharegpt_v3_split() -> list[dict]:
    """As ShareGPT_V3_unfiltered_cleaned_split.json: {id, conversations}, long conversations cut into chunks
    `<id>_0`, `<id>_1`, … so later chunks begin with the assistant; a few odd role names, repeated roles and
    empty turns."""
    records = [{"id": f"plain{i}_0", "conversations": turns(("human", f"Question {i}?"), ("gpt", f"Answer {i}."),
                                                             ("human", "More?"), ("gpt", f"More on {i}."))}
               for i in range(8)]
    records += [{"id": f"long{i}_1", "conversations": turns(("gpt", f"...continued answer {i}."),
                                                             ("human", f"Follow-up {i}?"), ("gpt", f"Reply {i}."))}
                for i in range(6)]
    records += [
        {"id": "two_gpt_2", "conversations": turns(("gpt", "tail one"), ("gpt", "tail two"), ("human", "q"),
                                                   ("gpt", "a"))},
        {"id": "humans_0", "conversations": turns(("human", "Part one."), ("human", "Part two."), ("gpt", "Both."))},
        {"id": "gpts_0", "conversations": turns(("human", "Tell me."), ("gpt", "First half"), ("gpt", "second half."))},
        {"id": "chatgpt_0", "conversations": turns(("human", "Hi chatgpt"), ("chatgpt", "Hello."))},
        {"id": "bing_0", "conversations": turns(("human", "Search"), ("bing", "Results."))},
        {"id": "bard_0", "conversations": turns(("user", "Hi bard"), ("bard", "Hi."))},
        {"id": "system_0", "conversations": turns(("system", "Be terse."), ("human", "Name a colour"), ("gpt", "Red"))},
        {"id": "empty_human_0", "conversations": turns(("human", ""), ("gpt", "Nothing to answer."))},
        {"id": "empty_gpt_0", "conversations": turns(("human", "Say something"), ("gpt", " "))},
        {"id": "only_gpt_3", "conversations": turns(("gpt", "The end of a long answer."))},
        {"id": "system_inside_0", "conversations": turns(("human", "a"), ("system", "b"), ("gpt", "c"))},
    ]
    return records


def node(mid: str, role: str, text: str, replies=(), **fields) -> dict:
    """A message as OpenAssistant's exporter writes it (ExportMessageNode), replies nested."""
    message = {"message_id": mid, "user_id": f"u-{mid}", "created_date": "2023-02-05T14:23:50.983374+00:00",
               "text": text, "role": role, "lang": fields.pop("lang", "en"), "review_count": 3,
               "review_result": fields.pop("review_result", True), "deleted": fields.pop("deleted", False),
               "synthetic": False, "model_name": None, "emojis": {"+1": 2}, **fields}
    if replies:
        message["replies"] = list(replies)
    return message


def oasst_trees() -> list[dict]:
    best = node("t1-p1", "prompter", "What is 2+2?", [
        node("t1-a2", "assistant", "5", rank=1),
        node("t1-a1", "assistant", "4", [
            node("t1-p3", "prompter", "Rude follow-up", review_result=False),
            node("t1-p2", "prompter", "And times 3?", [node("t1-a4", "assistant", "12", rank=0)]),
        ], rank=0),
        node("t1-a0", "assistant", "deleted answer", rank=0, deleted=True),
    ])
    german = node("t2-p1", "prompter", "Wie spät ist es?", [node("t2-a1", "assistant", "Zwölf.", rank=0, lang="de")],
                  lang="de")
    unranked = node("t3-p1", "prompter", "¿Hola?", [node("t3-a1", "assistant", "Hola.", lang="es"),
                                                   node("t3-a2", "assistant", "Buenas.", lang="es")], lang="es")
    trees = [best, german, unranked,
             node("t4-p1", "prompter", "deleted prompt", [node("t4-a1", "assistant", "x", rank=0)], deleted=True),
             node("t5-p1", "prompter", "spam", [node("t5-a1", "assistant", "y", rank=0)], review_result=False),
             node("t6-p1", "prompter", "Nobody answered")]
    return [{"message_tree_id": t["message_id"], "tree_state": "ready_for_export", "prompt": t} for t in trees]


def flatten(message: dict, parent: str | None, tree: str) -> list[dict]:
    flat = {k: v for k, v in message.items() if k != "replies"}
    flat.update(parent_id=parent, message_tree_id=tree)
    return [flat] + [m for reply in message.get("replies", []) for m in flatten(reply, message["message_id"], tree)]


def v1(role: str, text: str, weight: float) -> dict:
    return {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": weight}


AREA_TOOLS = [{"name": "calculate_area", "description": "Calculate the area of a given shape",
               "parameters": {"type": "object", "properties": {
                   "shape": {"type": "string", "description": "The shape"},
                   "dimensions": {"type": "array", "items": {"type": "number"}}}, "required": ["shape", "dimensions"]}}]


def glaive_rows() -> list[dict]:
    """As LLaMA-Factory's glaive_toolcall_en_demo.json: ShareGPT turns with function_call (the call's JSON text)
    and observation turns, `tools` a JSON string ("[]" on rows without tools)."""
    calling = {"conversations": turns(
        ("human", "I need the area of a rectangle, 5 by 3."),
        ("function_call", json.dumps({"name": "calculate_area",
                                      "arguments": {"shape": "rectangle", "dimensions": [5, 3]}})),
        ("observation", json.dumps({"area": 15})),
        ("gpt", "The area is 15 square units."),
        ("human", "And a circle of radius 4?"),
        ("function_call", json.dumps({"name": "calculate_area", "arguments": {"shape": "circle", "dimensions": [4]}})),
        ("observation", json.dumps({"area": 50.24})),
        ("gpt", "About 50.24 square units.")), "tools": json.dumps(AREA_TOOLS)}
    chat = {"conversations": turns(("human", "Define photoshop."), ("gpt", "An image editor.")), "tools": "[]"}
    broken = {"conversations": turns(("human", "x"), ("function_call", "not json")), "tools": json.dumps(AREA_TOOLS)}
    orphan = {"conversations": turns(("human", "x"), ("observation", "{}"), ("gpt", "y")), "tools": "[]"}
    return [calling, chat, broken, orphan]


def openai_tool_rows() -> list[dict]:
    """The same conversation in OpenAI's spelling: tool_calls with JSON-text arguments, role tool, tools list."""
    def call(call_id, shape, dims):
        return {"id": call_id, "type": "function", "function": {
            "name": "calculate_area", "arguments": json.dumps({"shape": shape, "dimensions": dims})}}

    return [{"messages": [
        {"role": "user", "content": "I need the area of a rectangle, 5 by 3."},
        {"role": "assistant", "content": None, "tool_calls": [call("call_1", "rectangle", [5, 3])]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"area": 15})},
        {"role": "assistant", "content": "The area is 15 square units."},
        {"role": "user", "content": "And a circle of radius 4?"},
        {"role": "assistant", "content": "", "tool_calls": [call("call_2", "circle", [4])]},
        {"role": "tool", "tool_call_id": "call_2", "content": json.dumps({"area": 50.24})},
        {"role": "assistant", "content": "About 50.24 square units."}],
        "tools": [{"type": "function", "function": tool} for tool in AREA_TOOLS]}]
