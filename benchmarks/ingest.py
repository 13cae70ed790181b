"""Ingest throughput and memory: an Alpaca JSON of 52,000 records and a 10,000-row MedicationQA xlsx into the
store (format detection, parsing, ids, dedupe, parquet) against plain pandas.read_json / pandas.read_excel on the
same files, and against what a trainer's user runs (LLaMA-Factory's way: `datasets.load_dataset("json")` plus a
`map` into messages), and peak memory on a large JSONL at two sizes (flat when streaming). Files are built by
the run."""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import isolated

WORDS = ("data model answer question simple explain write list describe the of a to and in is for with that "
         "patient dose tablet daily water energy system value number result example process change form "
         "language city river history music color animal plant light sound market price health sleep").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def alpaca_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"instruction": f"{_text(rng, rng.randint(6, 16))} ({i})",
             "input": _text(rng, rng.randint(5, 20)) if rng.random() < 0.4 else "",
             "output": _text(rng, rng.randint(20, 120))} for i in range(n)]


def write_xlsx(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    rng = random.Random(1)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("DrugQA")
    ws.append(["Question", "Focus (Drug)", "Question Type", "Answer", "Section Title", "URL"])
    for i in range(rows):
        ws.append([f"{_text(rng, 10)} ({i})", rng.choice(WORDS), "Usage", _text(rng, 60), "How should it be used?",
                   f"https://medlineplus.gov/druginfo/meds/a{i:06d}.html"])
    wb.save(path)


def write_jsonl(path: Path, megabytes: int) -> int:
    target, written, rows = megabytes << 20, 0, 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            for record in alpaca_records(10_000, seed=rows):
                line = json.dumps(record) + "\n"
                out.write(line)
                written += len(line)
                rows += 1
    return rows


def ours(path: str, store_dir: str) -> int:
    """The ingest.source stage end to end: fingerprint, read, parse, dedupe, publish parquet to the store. A fresh
    SFTFLOW_HOME each run, so the file's digest is computed as for a file never seen (tasks/digest.py)."""
    os.environ["SFTFLOW_HOME"] = tempfile.mkdtemp(prefix="home-", dir=Path(store_dir).parent)
    from flows.plan import run_alone
    from storage.store import Store
    from tasks.ingest.config import STAGE as SOURCE_STAGE
    from tasks.ingest.config import SourceConfig

    return run_alone(SOURCE_STAGE, SourceConfig(path=path), {}, Store(store_dir), force=True).stats["read"]


def pandas_json(path: str, lines: bool = False) -> int:
    import pandas as pd

    return len(pd.read_json(path, lines=lines))


def alpaca_messages(record: dict[str, str]) -> dict[str, Any]:
    user = record["instruction"] + ("\n\n" + record["input"] if record["input"] else "")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]}


def datasets_map(path: str, cache_dir: str) -> int:
    """Alpaca into messages as the trainers do it: Arrow cache files written, in a fresh cache every run."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    datasets.disable_progress_bars()
    cache = tempfile.mkdtemp(prefix="hf-datasets-", dir=cache_dir)
    table = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
    return len(table.map(alpaca_messages, remove_columns=table.column_names))


def pandas_excel(path: str) -> int:
    import pandas as pd

    return len(pd.read_excel(path, sheet_name="DrugQA"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=52_000, help="Alpaca JSON records")
    parser.add_argument("--xlsx-rows", type=int, default=10_000)
    parser.add_argument("--jsonl-mb", type=int, default=200, help="size of the large JSONL (1024 for the 1 GB test)")
    parser.add_argument("--no-pandas-jsonl", action="store_true",
                        help="skip pandas on the large JSONL (it loads the whole file)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each side, alternating ours and pandas; the fastest counts (shared machines)")


def _ours(rows: int, ours_run: tuple[float, float, Any]) -> dict[str, Any]:
    return {"rows": rows, "ours_s": round(ours_run[0], 2), "ours_rows_per_s": round(rows / ours_run[0]),
            "ours_peak_mb": round(ours_run[1])}


def _row(name: str, rows: int, ours_run: tuple[float, float, Any], base_run: tuple[float, float, Any]
         ) -> dict[str, Any]:
    return {"name": name, **_ours(rows, ours_run), "baseline_s": round(base_run[0], 2),
            "baseline_rows_per_s": round(rows / base_run[0]), "baseline_peak_mb": round(base_run[1])}


def _pair(repeat: int, ours_args: tuple | None, base_fn: Any, base_args: tuple | None
          ) -> tuple[tuple[float, float, Any] | None, tuple[float, float, Any] | None]:
    """The fastest of `repeat` fresh-process runs of ours and of the baseline, alternating, so that both see
    the same moments of a shared machine; the peak memory is the largest seen."""
    ours_runs, base_runs = [], []
    for _ in range(max(1, repeat)):
        if ours_args is not None:
            ours_runs.append(isolated(ours, *ours_args))
        if base_args is not None:
            base_runs.append(isolated(base_fn, *base_args))

    def best(runs: list[tuple[float, float, Any]]) -> tuple[float, float, Any]:
        fastest = min(runs, key=lambda r: r[0])
        return fastest[0], max(r[1] for r in runs), fastest[2]

    return best(ours_runs) if ours_runs else None, best(base_runs) if base_runs else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    comparisons = []
    with tempfile.TemporaryDirectory(prefix="sftflow-bench-ingest-") as tmp:
        tmpdir = Path(tmp)
        alpaca = tmpdir / "alpaca_52k.json"
        alpaca.write_text(json.dumps(alpaca_records(args.records)))
        store = str(tmpdir / "store")
        alpaca_run, pandas_run = _pair(args.repeat, (str(alpaca), store), pandas_json, (str(alpaca),))
        comparisons.append(_row("alpaca json vs datasets.load_dataset + map to messages", args.records,
                                alpaca_run, _pair(args.repeat, None, datasets_map, (str(alpaca), tmp))[1]))
        comparisons.append(_row("alpaca json vs pandas.read_json (parse only, the floor)", args.records,
                                alpaca_run, pandas_run))
        sheet = tmpdir / "medicationqa_10k.xlsx"
        write_xlsx(sheet, args.xlsx_rows)
        comparisons.append(_row("xlsx vs pandas.read_excel", args.xlsx_rows,
                                *_pair(args.repeat, (str(sheet), store), pandas_excel, (str(sheet),))))
        alpaca.unlink()
        small, large = tmpdir / "small.jsonl", tmpdir / "large.jsonl"
        small_rows = write_jsonl(small, max(1, args.jsonl_mb // 8))
        large_rows = write_jsonl(large, args.jsonl_mb)
        small_run, small_base = _pair(args.repeat, (str(small), store), pandas_json, (str(small), True))
        large_run, large_base = _pair(args.repeat, (str(large), store), pandas_json,
                                      None if args.no_pandas_jsonl else (str(large), True))
        comparisons.append(_row(f"jsonl {max(1, args.jsonl_mb // 8)} MB vs pandas.read_json(lines=True)", small_rows,
                                small_run, small_base))
        large_name = f"jsonl {args.jsonl_mb} MB"
        if large_base is None:
            extra = {"large_jsonl_ours_only": {"name": large_name, **_ours(large_rows, large_run)}}
        else:
            comparisons.append(_row(f"{large_name} vs pandas.read_json(lines=True)", large_rows, large_run, large_base))
            extra = {}
    return {"benchmark": "ingest", "comparisons": comparisons, **extra,
            "jsonl_peak_mb_growth": round(large_run[1] - small_run[1]),
            "repeat": args.repeat,
            "note": "fastest of `repeat` alternating runs each; "
                    "ours = the ingest.source stage end to end (content hash, parse, ids, dedupe, parquet in the "
                    "store); baselines = datasets.load_dataset('json') + map into messages (what a trainer's user "
                    "runs), and pandas reading the file into a DataFrame only. Peak RSS includes imports."}
