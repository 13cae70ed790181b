"""xlsx sources built here with openpyxl: the MedicationQA layout, a bad workbook, and the error messages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import Workbook

from tasks.errors import BadInputError
from tasks.ingest.formats import MEDICATIONQA_SYSTEM
from tests.ingest_helpers import ingest, messages

HEADER = ["Question", "Focus (Drug)", "Question Type", "Answer", "Section Title", "URL"]
SEED_ROW = ["how does rivatigmine and otc sleep medicine interact?", "rivastigmine", "Interaction",
            "tell your doctor and pharmacist what prescription and nonprescription medications you take",
            "What special precautions should I follow?", "https://medlineplus.gov/druginfo/meds/a602009.html"]


def good_workbook(path: Path) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = "DrugQA"
    ws.append(HEADER)
    ws.append(SEED_ROW)
    ws.append(["what is metformin for?", "metformin", "Indication", "Type 2 diabetes.", "Why?", "https://x"])
    wb.save(path)
    return path


def bad_workbook(path: Path) -> Path:
    """A notes sheet first, a merged title row, a header merged over two columns, an empty answer, a #DIV/0!
    answer, a blank row, a duplicate and a numeric answer."""
    wb = Workbook()
    notes = wb.active
    notes.title = "Notes"
    notes.append(["exported by", "someone"])
    ws = wb.create_sheet("DrugQA")
    ws.append(["MedicationQA export, do not edit"])
    ws.merge_cells("A1:F1")
    ws.append(["Question", "Focus (Drug)", "Question Type", "Answer", None, "URL"])
    ws.merge_cells("D2:E2")
    ws.append(SEED_ROW[:4] + ["spill-over", SEED_ROW[5]])  # row 3
    ws.append(["what dose of aspirin?", "aspirin", "Dose", None, None, "u"])  # row 4: empty answer
    ws.append(["what is warfarin?", "warfarin", "Information", "#DIV/0!", None, "u"])  # row 5: error cell
    ws.append([None] * 6)  # row 6: blank
    ws.append(SEED_ROW[:4] + ["spill-over", SEED_ROW[5]])  # row 7: duplicate of row 3
    ws.append(["how many tablets?", "ibuprofen", "Dose", 2, None, "#N/A"])  # row 8: a number; an error in meta
    ws.append(["   ", "x", "Dose", "an answer to nothing", None, "u"])  # row 9: empty question
    wb.save(path)
    return path


def test_medicationqa_preset(tmp_path):
    table, stats, quarantine = ingest(good_workbook(tmp_path / "m.xlsx"), format="medicationqa")
    assert stats["format"] == "medicationqa" and stats["split"] == "DrugQA" and stats["kept"] == 2
    row = table.to_pylist()[0]
    assert row["system"] == MEDICATIONQA_SYSTEM == (
        "You are a professional, highly experienced doctor professor. You always provide accurate, comprehensive, "
        "and detailed answers based on the patients' questions.")
    assert messages(table) == [("user", SEED_ROW[0]), ("assistant", SEED_ROW[3])]
    assert json.loads(row["meta"]) == dict(zip(["Focus (Drug)", "Question Type", "Section Title", "URL"],
                                               [SEED_ROW[1], SEED_ROW[2], SEED_ROW[4], SEED_ROW[5]]))
    assert row["source"] == {"uri": str(tmp_path / "m.xlsx"), "format": "medicationqa", "split": "DrugQA", "row": 1}
    assert ingest(tmp_path / "m.xlsx")[1]["format"] == "medicationqa", "detected from the headers"


def test_bad_workbook_rows_are_quarantined_and_counted(tmp_path):
    table, stats, quarantine = ingest(bad_workbook(tmp_path / "bad.xlsx"), format="medicationqa")
    assert stats["split"] == "DrugQA" and stats["header_row"] == 1 and stats["blank_rows"] == 1
    assert stats["read"] == 6 and stats["kept"] == 2 and stats["duplicates"] == 1
    assert stats["quarantined"] == {"empty_assistant": 1, "error_cell": 1, "empty_user": 1}
    by_reason = {r["reason"]: r for r in quarantine.to_pylist()}
    assert by_reason["error_cell"]["row"] == 4 and by_reason["error_cell"]["field"] == "Answer"
    assert "#DIV/0!" in by_reason["error_cell"]["detail"] and "warfarin" in by_reason["error_cell"]["excerpt"]
    assert by_reason["empty_assistant"]["row"] == 3 and by_reason["empty_user"]["row"] == 8
    rows = table.to_pylist()
    assert json.loads(rows[0]["meta"])["column_E"] == "spill-over", "the merged header's second column keeps a name"
    assert rows[1]["messages"][1]["content"] == "2" and json.loads(rows[1]["meta"])["URL"] == "#N/A"


def test_missing_sheet_lists_the_sheets(tmp_path):
    path = good_workbook(tmp_path / "m.xlsx")
    with pytest.raises(BadInputError, match=r"no sheet 'Sheet9'.*\['DrugQA'\].*--sheet"):
        ingest(path, sheet="Sheet9")
    notes_only = Workbook()
    notes_only.active.title = "Notes"
    notes_only.active.append(["Question", "Answer"])
    notes_only.save(tmp_path / "n.xlsx")
    with pytest.raises(BadInputError, match=r"no sheet 'DrugQA'.*\['Notes'\]"):
        ingest(tmp_path / "n.xlsx", sheet="DrugQA", format="medicationqa")


def test_missing_columns_list_headers_and_mapping(tmp_path):
    path = good_workbook(tmp_path / "m.xlsx")
    with pytest.raises(BadInputError) as err:
        ingest(path, mapping={"input": "Question", "output": "Response"})
    message = str(err.value)
    assert "Question Type" in message and "'output': 'Response'" in message and "m.xlsx" in message


def test_plain_sheet_with_a_mapping_and_a_system_column(tmp_path):
    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(["prompt", "persona", "reply", "topic"])
    ws.append(["Hi", "You are terse.", "Hello", "greeting"])
    wb.save(tmp_path / "p.xlsx")
    table, stats, _ = ingest(tmp_path / "p.xlsx", mapping={"input": "prompt", "output": "reply", "system": "persona"})
    assert stats["format"] == "columns" and table.column("system").to_pylist() == ["You are terse."]
    assert json.loads(table.column("meta")[0].as_py()) == {"topic": "greeting"}


def test_alpaca_headers_in_a_sheet_are_detected(tmp_path):
    wb = Workbook()
    wb.active.append(["instruction", "input", "output"])
    wb.active.append(["Add.", "1 and 2", "3"])
    wb.save(tmp_path / "a.xlsx")
    table, stats, _ = ingest(tmp_path / "a.xlsx")
    assert stats["format"] == "alpaca" and messages(table)[0] == ("user", "Add.\n\n1 and 2")


def test_progress_knows_the_sheet_size_and_counts_rows_read(tmp_path):
    from tasks.ingest import read_source
    from tasks.stages.ingest_source import SourceConfig

    calls: dict[str, list] = {"total": [], "advanced": []}

    def progress(total, description):
        calls["total"].append((total, description))
        return calls["advanced"].append

    reading = read_source(SourceConfig(path=str(bad_workbook(tmp_path / "bad.xlsx"))), progress=progress,
                          batch_rows=2)
    list(reading.tables)
    assert calls["total"] == [(7, "ingest bad.xlsx")]  # 7 sheet rows below the header, one of them blank
    assert sum(calls["advanced"]) == reading.stats["read"] == 6
