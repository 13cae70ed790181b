"""Parsing a model's numbered continuation back into tasks, with Alpaca's filters and a reason for each drop."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

from tasks.self_instruct.prompt import NO_INPUT, Task

# Alpaca's keywords for tasks a language model cannot do (pictures, files, drawing, sound).
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
TASK_START_RE = re.compile(r"(?:^|\n)\s*(?:###\s*\n\s*)?(\d+)\s*\.\s+Instruction:")
SEPARATOR_RE = re.compile(r"^\s*###\s*|\s*###\s*$")
DROP_REASONS = ("malformed", "truncated", "too_short", "too_long", "blacklist", "write_a_program",
                "starts_with_punctuation", "non_english_start", "duplicate")


@dataclass(frozen=True)
class Drop:
    reason: str
    text: str  # the task's raw text (or the instruction when it parsed)
    task: Task | None = None


def parse_response(text: str, num_prompt_instructions: int, finish_reason: str | None,
                   min_words: int = 4, max_words: int = 150) -> tuple[list[Task], list[Drop]]:
    """Split the continuation of a prompt with `num_prompt_instructions` examples into new tasks.

    The prompt ends with "N. Instruction:", so the text starts inside task N (a chat model may repeat the
    header; both work). When generation stopped at the token limit, the last task is cut off and dropped."""
    first = num_prompt_instructions + 1
    if not re.match(rf"\s*(?:###\s*)?{first}\s*\.\s+Instruction:", text):
        text = f"{first}. Instruction:" + text
    starts = [m.start() for m in TASK_START_RE.finditer(text)] or [0]
    blocks = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    tasks, drops = [], []
    for i, block in enumerate(blocks):
        block = SEPARATOR_RE.sub("", block).strip()
        if i == len(blocks) - 1 and finish_reason == "length":
            drops.append(Drop("truncated", block))
            continue
        task = split_task(block)
        if task is None:
            drops.append(Drop("malformed", block))
            continue
        reason = filter_reason(task.instruction, min_words, max_words)
        if reason:
            drops.append(Drop(reason, task.instruction, task))
        else:
            tasks.append(task)
    return tasks, drops


def split_task(block: str) -> Task | None:
    """'N. Instruction: …\\nN. Input:\\n…\\nN. Output:\\n…' → Task; None unless all three fields are there."""
    match = re.match(r"\s*(\d+)\s*\.\s+Instruction:", block)
    if not match:
        return None
    number = match.group(1)
    parts = re.split(rf"{number}\s*\.\s+(Instruction|Input|Output):", block)
    if [p for p in parts[1::2]] != ["Instruction", "Input", "Output"]:
        return None
    instruction, input_text, output = (p.strip() for p in parts[2::2])
    input_text = "" if input_text.lower() == NO_INPUT else input_text
    if not instruction or not output:
        return None
    return Task(instruction, input_text, output)


def filter_reason(instruction: str, min_words: int = 4, max_words: int = 150) -> str | None:
    """Alpaca's `post_process_gpt3_response` filters, in its order; None when the instruction passes."""
    words = len(instruction.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if BLACKLIST_RE.search(instruction):
        return "blacklist"
    # Alpaca: models tend to prefix "Write a program" to ordinary tasks, which confuses what is asked.
    if instruction.startswith("Write a program"):
        return "write_a_program"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "non_english_start"
    return None
