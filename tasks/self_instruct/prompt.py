"""Seed tasks and Alpaca's generation prompt (stanford_alpaca's `encode_prompt`)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import fsspec

from tasks.errors import BadInputError

NO_INPUT = "<noinput>"


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str
    output: str
    id: str | None = None  # seed tasks keep their id for lineage


def read_text(path: str) -> str:
    try:
        with fsspec.open(path, "r", encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None


def load_seed_tasks(path: str) -> list[Task]:
    """Alpaca/self-instruct seed tasks: one JSON object a line with `instruction` and `instances[0]`."""
    tasks = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"not JSON: {exc.msg}", file=path, row=line_no) from None
        instruction = row.get("instruction") if isinstance(row, dict) else None
        if not isinstance(instruction, str) or not instruction.strip():
            raise BadInputError("missing or empty instruction", file=path, row=line_no, field="instruction")
        instances = row.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise BadInputError("needs at least one instance {input, output}", file=path, row=line_no,
                                field="instances")
        first = instances[0]
        if not isinstance(first.get("output"), str):
            raise BadInputError("instance without an output string", file=path, row=line_no,
                                field="instances[0].output")
        tasks.append(Task(instruction, first.get("input") or "", first["output"], str(row.get("id", line_no))))
    if not tasks:
        raise BadInputError("no seed tasks", file=path)
    return tasks


def default_prompt_file(seed_tasks: str) -> str:
    """Alpaca keeps prompt.txt next to seed_tasks.jsonl."""
    return str(Path(seed_tasks).with_name("prompt.txt")) if "://" not in seed_tasks else \
        seed_tasks.rsplit("/", 1)[0] + "/prompt.txt"


def encode_prompt(requirements: str, tasks: list[Task]) -> str:
    """The requirements text, then the tasks numbered from 1 between `###` lines, the next number left open."""
    prompt = requirements + "\n"
    for idx, task in enumerate(tasks, start=1):
        instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
        input_text = NO_INPUT if task.input.lower() == "" else task.input
        prompt += "###\n"
        prompt += f"{idx}. Instruction: {instruction}\n"
        prompt += f"{idx}. Input:\n{input_text}\n"
        prompt += f"{idx}. Output:\n{task.output}\n"
    prompt += "###\n"
    prompt += f"{len(tasks) + 1}. Instruction:"
    return prompt
