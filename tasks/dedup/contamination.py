"""Benchmark contamination: training rows that share a run of `ngram` normalized words with an evaluation row's
prompt or answer (GPT-3's 13-gram rule, as datatrove applies it). An evaluation prompt shorter than `ngram`
words matches as a whole: all its words, in order, inside a training prompt or answer. No n-gram spans the
prompt and the answer. Evaluation files are read with the ingest code, so any ingestible format works.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.dedup.config import ContaminationConfig
from tasks.dedup.features import RowFeatures
from tasks.dedup.text import Ragged, prompts_and_answers, spans, windows, words
from tasks.errors import BadInputError
from tasks.ingest.config import SourceConfig


@dataclass
class EvalRows:
    ids: list[str]
    sources: list[str]  # "uri#row" of each evaluation row
    prompts: list[str]
    answers: list[str]

    @classmethod
    def from_tables(cls, tables: Sequence[pa.Table]) -> EvalRows:
        table = pa.concat_tables(tables) if tables else None
        if table is None or not table.num_rows:
            return cls([], [], [], [])
        prompts, answers = prompts_and_answers(table)
        sources = [f"{s['uri']}#{s['row']}" for s in table.column("source").to_pylist()]
        return cls(table.column("id").to_pylist(), sources, prompts, answers)


def eval_fingerprint(sources: Sequence[SourceConfig]) -> dict[str, list[str]]:
    """Stage-key material: the content of every evaluation file (a changed file re-runs the stage)."""
    from tasks.ingest.revision import source_revision

    return {"decontaminate": [source_revision(s.path) for s in sources]}


def read_eval_sources(sources: Sequence[SourceConfig]) -> tuple[EvalRows, list[dict[str, Any]]]:
    """Every evaluation file through the ingest reader: its rows and its ingest counts (read, kept,
    quarantined, duplicates). A file that cannot be read at all raises BadInputError naming it."""
    from tasks.ingest import read_source

    tables, stats = [], []
    for i, source in enumerate(sources):
        try:
            reading = read_source(source)
            tables.extend(reading.tables)
        except FileNotFoundError as exc:
            raise BadInputError(f"evaluation file not found ({exc})", file=source.path,
                                field=f"dedup.decontaminate[{i}]") from None
        stats.append({k: reading.stats[k] for k in ("uri", "format", "read", "kept", "quarantined", "duplicates")})
    return EvalRows.from_tables(tables), stats


@dataclass
class Contaminated:
    rows: np.ndarray  # training row indices
    eval_rows: np.ndarray  # the evaluation row each overlaps most
    similarity: np.ndarray  # share of that evaluation row's n-grams found in the training row (1.0: all)


def _ngrams(prompt_words: Ragged, answer_words: Ragged, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash, row) of every run of exactly `size` words inside the prompt or the answer of each row."""
    parts = [windows(prompt_words, size, short_whole=False), windows(answer_words, size, short_whole=False)]
    return np.concatenate([p.values for p in parts]), np.concatenate([p.row_ids() for p in parts])


def contaminated_rows(features: RowFeatures, evals: EvalRows, config: ContaminationConfig
                      ) -> tuple[Contaminated, dict[str, Any]]:
    n = config.ngram
    eval_prompt, eval_answer = words(evals.prompts), words(evals.answers)
    lengths = eval_prompt.lengths
    short = (lengths < n) & (lengths >= config.min_words)
    # what each evaluation row is matched by: its n-grams, or for a short prompt the prompt as a whole
    keys, owner = _ngrams(eval_prompt, eval_answer, n)
    whole = windows(eval_prompt, n)  # a prompt shorter than n words is one window of all its words
    per_length = {}
    for size in np.unique(lengths[short]).tolist():
        rows = np.flatnonzero(short & (lengths == size))
        per_length[size] = (whole.values[whole.offsets[rows]], rows)
    total = np.zeros(len(evals.ids), dtype=np.int64)  # distinct keys per evaluation row
    if len(keys):
        distinct = np.unique(np.stack([owner, keys.view(np.int64)], axis=1), axis=0)
        total += np.bincount(distinct[:, 0], minlength=len(evals.ids))
    for _, rows in per_length.values():
        total[rows] += 1

    train_rows, eval_rows, hit_keys = [], [], []
    for size, (size_keys, size_owner) in [(n, (keys, owner))] + sorted(per_length.items()):
        if not len(size_keys):
            continue
        values, row_of = _ngrams(features.prompt_words, features.answer_words, size)
        order = np.argsort(size_keys, kind="stable")
        sorted_keys, sorted_owner = size_keys[order], size_owner[order]
        lo = np.searchsorted(sorted_keys, values, side="left")
        found = sorted_keys[np.minimum(lo, len(sorted_keys) - 1)] == values
        values, row_of, lo = values[found], row_of[found], lo[found]
        hi = np.searchsorted(sorted_keys, values, side="right")
        reps = hi - lo  # an n-gram found in several evaluation rows counts for each
        at = spans(lo, reps)
        train_rows.append(np.repeat(row_of, reps))
        eval_rows.append(sorted_owner[at])
        hit_keys.append(np.repeat(values, reps))
    stats = {"eval_rows": len(evals.ids), "ngram": n, "eval_prompts_matched_whole": int(short.sum()),
             "eval_prompts_too_short": int((lengths < config.min_words).sum()),
             "eval_rows_unmatchable": int((total == 0).sum())}  # nothing of n words, prompt too short
    if not train_rows or not sum(len(t) for t in train_rows):
        return Contaminated(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)), stats
    triples = np.unique(np.stack([np.concatenate(train_rows), np.concatenate(eval_rows),
                                  np.concatenate(hit_keys).view(np.int64)], axis=1), axis=0)
    pair_codes, counts = np.unique(triples[:, 0] * len(evals.ids) + triples[:, 1], return_counts=True)
    train, evaluated = pair_codes // len(evals.ids), pair_codes % len(evals.ids)
    share = counts / total[evaluated]
    best = np.lexsort((evaluated, -share, train))  # per training row: the most covered evaluation row first
    first = np.r_[True, train[best][1:] != train[best][:-1]]
    chosen = best[first]
    return Contaminated(train[chosen], evaluated[chosen], share[chosen]), stats
