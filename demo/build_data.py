"""Write the demo data into demo/data/ (generated at build time, not committed):

- medicationqa_demo.xlsx: MedicationQA's layout (sheet DrugQA: Question | Focus (Drug) | Question Type | Answer |
  Section Title | URL), with one unanswered question and one duplicated row;
- guanaco_demo.jsonl: openassistant-guanaco-style `### Human: … ### Assistant: …` multi-turn records;
- alpaca_demo.json: Alpaca instruction / input / output records.

Usage: python demo/build_data.py [OUT_DIR]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import alpaca
import guanaco
import medicationqa
from openpyxl import Workbook

HERE = Path(__file__).resolve().parent
HEADER = ["Question", "Focus (Drug)", "Question Type", "Answer", "Section Title", "URL"]


def write_xlsx(path: Path) -> int:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "DrugQA"
    sheet.append(HEADER)
    rows = medicationqa.rows()
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return len(rows)


def guanaco_text(turns: list[tuple[str, str | None]], tight: bool) -> str:
    gap = "" if tight else " "  # the seed's record has no space before "### Assistant:"
    parts = []
    for human, assistant in turns:
        parts.append(f"### Human: {human}")
        if assistant is not None:
            parts.append(f"### Assistant: {assistant}")
    return gap.join(parts)


def write_guanaco(path: Path) -> int:
    records = guanaco.CONVERSATIONS + guanaco.UNANSWERED
    with path.open("w", encoding="utf-8") as out:
        for i, turns in enumerate(records):
            out.write(json.dumps({"text": guanaco_text(turns, tight=i % 3 == 0)}, ensure_ascii=False) + "\n")
    return len(records)


def write_alpaca(path: Path) -> int:
    records = [{"instruction": i, "input": x, "output": o} for i, x, o in alpaca.RECORDS + alpaca.INCOMPLETE]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return len(records)


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {
        "medicationqa_demo.xlsx": write_xlsx(out_dir / "medicationqa_demo.xlsx"),
        "guanaco_demo.jsonl": write_guanaco(out_dir / "guanaco_demo.jsonl"),
        "alpaca_demo.json": write_alpaca(out_dir / "alpaca_demo.json"),
    }
    print("demo data: " + ", ".join(f"{name} ({n} rows)" for name, n in counts.items()) + f" in {out_dir}",
          file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "data")
