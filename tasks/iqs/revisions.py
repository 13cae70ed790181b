"""Expert-revision pairs: reading both input layouts, the edit-distance filter, the training formats, the split.

Two layouts are read:
- expert revision records (JSON list or JSONL) with `Raw Instruction`, `Raw Input`, `Raw Response`,
  `Revised Instruction`, `Revised Input`, `Revised Response` and an optional `Distance`;
- CaR's `src,score` CSV, rows in pairs: the raw text (score 0) followed by its revision (score 1).

Both become `RevisionPair`s whose texts are the CaR view "Instruction: … [Input: …] Response: …" built by
`tasks.text.car_text`, the same function that builds the text of a dataset row at scoring time.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tasks.errors import BadInputError
from tasks.text import alpaca_user_content, car_text

RECORD_FIELDS = ("Instruction", "Input", "Response")
DEFAULT_MIN_DISTANCE = 200  # CaR dropped revisions closer than this to the raw text
_WHITESPACE = re.compile(r"\s+")
_RESPONSE = re.compile(r"\sResponse:")


@dataclass(frozen=True)
class RevisionPair:
    raw: str
    revised: str
    distance: int
    origin: str  # "file:row" of the raw side, for messages and the split


def normalize_whitespace(text: str) -> str:
    """Every run of whitespace (newlines included) becomes one space."""
    return _WHITESPACE.sub(" ", text).strip()


def record_text(instruction: str, input_text: str, response: str) -> str:
    """The CaR view of an Alpaca-style triple, built exactly as a dataset row is built at scoring time."""
    messages = [{"role": "user", "content": alpaca_user_content(instruction, input_text)},
                {"role": "assistant", "content": response}]
    return car_text(messages, {"instruction": instruction, "input": input_text})


def edit_distance(raw: str, revised: str) -> int:
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(raw, revised))


def read_revisions(path: str | Path) -> tuple[list[RevisionPair], str]:
    """All pairs of one file and its layout ("records" or "pairs_csv")."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError("revision file not found", file=str(path))
    if path.suffix.lower() == ".csv":
        return read_pairs_csv(path), "pairs_csv"
    return read_revision_records(path), "records"


def _load_json_records(path: Path) -> list[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"not valid JSON: {exc.msg}", file=str(path), row=exc.lineno) from exc
        return list(enumerate(items))
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise BadInputError(f"not valid JSON: {exc.msg}", file=str(path), row=line_no) from exc
    return rows


def read_revision_records(path: Path) -> list[RevisionPair]:
    pairs = []
    for row, record in _load_json_records(path):
        if not isinstance(record, dict):
            raise BadInputError("expected an object with Raw …/Revised … fields", file=str(path), row=row)
        values = {}
        for side in ("Raw", "Revised"):
            for name in RECORD_FIELDS:
                field = f"{side} {name}"
                value = record.get(field, "" if name == "Input" else None)
                if not isinstance(value, str):
                    raise BadInputError("missing or not a string", file=str(path), row=row, field=field)
                values[field] = value.strip()
            for name in ("Instruction", "Response"):
                if not values[f"{side} {name}"]:
                    raise BadInputError("empty text", file=str(path), row=row, field=f"{side} {name}")
        raw = [values[f"Raw {n}"] for n in RECORD_FIELDS]
        revised = [values[f"Revised {n}"] for n in RECORD_FIELDS]
        distance = record.get("Distance")
        if distance is None:
            distance = edit_distance("".join(raw), "".join(revised))
        elif not isinstance(distance, int | float) or distance < 0:
            raise BadInputError("must be a non-negative number", file=str(path), row=row, field="Distance")
        pairs.append(RevisionPair(record_text(*raw), record_text(*revised), int(distance), f"{path.name}:{row}"))
    return pairs


def read_pairs_csv(path: Path) -> list[RevisionPair]:
    """CaR's layout: `src,score`, a raw row (0) directly followed by its revision (1)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("src", "score") if c not in (reader.fieldnames or [])]
        if missing:
            raise BadInputError(f"missing column(s) {', '.join(missing)}; expected a src,score CSV "
                                f"(found {reader.fieldnames})", file=str(path), field=missing[0])
        rows = []
        for row_no, row in enumerate(reader, 1):  # row 1 = first data row
            text = (row["src"] or "").strip()
            if not text:
                raise BadInputError("empty text", file=str(path), row=row_no, field="src")
            try:
                score = float(row["score"])
            except (TypeError, ValueError) as exc:
                raise BadInputError(f"not a number: {row['score']!r}", file=str(path), row=row_no,
                                    field="score") from exc
            if not 0.0 <= score <= 1.0:
                raise BadInputError(f"score {score} outside [0, 1]", file=str(path), row=row_no, field="score")
            rows.append((row_no, text, score))
    if len(rows) % 2:
        raise BadInputError(f"{len(rows)} rows: pairs need an even number (raw row, then its revision)",
                            file=str(path), row=rows[-1][0] if rows else None)
    pairs = []
    for (raw_row, raw, raw_score), (rev_row, revised, rev_score) in zip(rows[0::2], rows[1::2]):
        if not raw_score < rev_score:
            raise BadInputError(f"a pair must be the raw row then a better-scored revision; got scores "
                                f"{raw_score} then {rev_score}", file=str(path), row=rev_row, field="score")
        pairs.append(RevisionPair(raw, revised, edit_distance(raw, revised), f"{path.name}:{raw_row}"))
    return pairs


def load_pairs(paths: Sequence[str | Path], min_distance: int = DEFAULT_MIN_DISTANCE,
               filter_csv: bool = False) -> tuple[list[RevisionPair], dict[str, int]]:
    """Pairs of all files, without those closer than `min_distance` (CaR's filter), and counts.

    CaR's published `src,score` CSVs are its prepared training data and keep pairs under 200 characters
    apart, so the filter applies to them only with `filter_csv`.
    """
    kept, stats = [], {"pairs_read": 0, "pairs_below_min_distance": 0}
    for path in paths:
        pairs, layout = read_revisions(path)
        stats["pairs_read"] += len(pairs)
        for pair in pairs:
            if (layout == "records" or filter_csv) and pair.distance < min_distance:
                stats["pairs_below_min_distance"] += 1
            else:
                kept.append(pair)
    stats["pairs_kept"] = len(kept)
    if not kept:
        raise BadInputError(f"no revision pairs left out of {stats['pairs_read']} (min_distance={min_distance})",
                            file=", ".join(map(str, paths)))
    return kept, stats


def split_pairs(pairs: Sequence[RevisionPair], valid_fraction: float, seed: int = 0
                ) -> tuple[list[RevisionPair], list[RevisionPair]]:
    """A deterministic split by a hash of each pair's text: the same pair lands on the same side every run."""
    def bucket(pair: RevisionPair) -> float:
        digest = hashlib.sha256(f"{seed}\0{pair.raw}\0{pair.revised}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    train = [p for p in pairs if bucket(p) >= valid_fraction]
    valid = [p for p in pairs if bucket(p) < valid_fraction]
    return train, valid


def regression_rows(pairs: Iterable[RevisionPair], normalize: bool = True) -> pa.Table:
    """CaR's IQS training rows: `src` text, `score` 0 for the raw side and 1 for the revision, pair by pair."""
    prep = normalize_whitespace if normalize else (lambda s: s)
    src, score = [], []
    for pair in pairs:
        src += [prep(pair.raw), prep(pair.revised)]
        score += [0.0, 1.0]
    return pa.table({"src": src, "score": pa.array(score, pa.float32())})


def split_response(text: str) -> tuple[str, str]:
    """("Instruction: … [Input: …]", "Response: …") at the first " Response:"."""
    found = _RESPONSE.search(text)
    if found is None:
        raise BadInputError(f"no ' Response:' in {text[:80]!r}", field="src")
    return text[:found.start()], "Response: " + text[found.end():].lstrip()


def texts_table(texts: Sequence[str]) -> pa.Table:
    """CaR texts ("Instruction: … [Input: …] Response: …") as canonical conversation rows, kept exactly as they
    are (newlines too), from which `car_text` gives each text back: so any scorer can score revision pairs."""
    from storage.schema import CONVERSATION_SCHEMA

    rows = []
    for i, text in enumerate(texts):
        head, response = split_response(text)
        instruction, _, input_text = head.removeprefix("Instruction: ").partition(" Input: ")
        rows.append({"id": f"text-{i}", "source": None, "system": None,
                     "messages": [{"role": "user", "content": alpaca_user_content(instruction, input_text)},
                                  {"role": "assistant", "content": response.removeprefix("Response: ")}],
                     "meta": json.dumps({"instruction": instruction, "input": input_text})})
    return pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA)


def ranking_triples(pairs: Iterable[RevisionPair], normalize: bool = True) -> pa.Table:
    """COMET's ranking format: `src` (the revised instruction and input), `pos` / `neg` responses."""
    prep = normalize_whitespace if normalize else (lambda s: s)
    src, pos, neg = [], [], []
    for pair in pairs:
        head, revised = split_response(prep(pair.revised))
        neg.append(split_response(prep(pair.raw))[1])
        src.append(head)
        pos.append(revised)
    return pa.table({"src": src, "pos": pos, "neg": neg})
