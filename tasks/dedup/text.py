"""Normalized words and word windows (shingles, n-grams) as flat hash arrays, built for whole tables at once.

Normalization (one definition for every rule): NFKC, lower case, apostrophes dropped, every run of characters
that are not letters, digits or combining marks becomes a space, and each CJK character is a word of its own
(those scripts put no spaces between words). A word is hashed once per distinct word (blake2b, so hashes are the
same in every process), and a window of words is a polynomial of its word hashes, mixed: computed with numpy over
all rows together (one prefix sum serves every window length), no Python loop per row or per word.
"""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CJK = r"(\p{Han}|\p{Hiragana}|\p{Katakana})"
WINDOW_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial's base
BASE_INVERSE = pow(int(WINDOW_BASE), -1, 1 << 64)
LENGTH_SALT = np.uint64(0xD6E8FEB86659FD93)  # a window of 3 words never hashes like one of 13 with equal words


@dataclass(frozen=True)
class Ragged:
    """One variable-length array per row: row i is values[offsets[i]:offsets[i + 1]]."""

    values: np.ndarray
    offsets: np.ndarray  # int64, rows + 1

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_ids(self) -> np.ndarray:
        """The row of every value."""
        return np.repeat(np.arange(self.rows), self.lengths)

    @cached_property
    def window_prefix(self) -> tuple[np.ndarray, np.ndarray]:
        """(B**i for i <= n, the prefix sums Q of `windows`), computed once for every window size."""
        n = len(self.values)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(self.values * _powers(BASE_INVERSE, n), out=prefix[1:])
        return _powers(int(WINDOW_BASE), n + 1), prefix

    def sets(self, rows: np.ndarray) -> dict[int, frozenset[int]]:
        """The distinct values of the given rows (exact set algebra for the few rows that are compared)."""
        return {int(i): frozenset(self.values[self.offsets[i]:self.offsets[i + 1]].tolist()) for i in rows}


def spans(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[0], starts[0]+1, .., starts[0]+counts[0]-1, starts[1], ...: the concatenated ranges, vectorized."""
    counts = np.asarray(counts, dtype=np.int64)
    first = np.cumsum(counts) - counts  # where each range begins in the output
    return np.repeat(np.asarray(starts, dtype=np.int64) - first, counts) + np.arange(int(counts.sum()))


def ragged_from_rows(values: np.ndarray, row_of: np.ndarray, rows: int) -> Ragged:
    """Values tagged with their row (in any order) as a Ragged, each row's values in their given order."""
    order = np.argsort(row_of, kind="stable")
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=offsets[1:])
    return Ragged(values[order], offsets)


def concat_rows(parts: Sequence[Ragged]) -> Ragged:
    """Row i of the result: row i of every part, one after the other."""
    values = np.concatenate([p.values for p in parts])
    row_of = np.concatenate([p.row_ids() for p in parts])
    return ragged_from_rows(values, row_of, parts[0].rows)


def prompts_and_answers(table: pa.Table) -> tuple[list[str], list[str]]:
    """Per conversation: its user turns and its assistant turns, each joined by newlines (the system prompt is
    left out: it is usually one template shared by a whole source)."""
    prompts, answers = [], []
    for messages in table.column("messages").to_pylist():
        turns = messages or []
        prompts.append("\n".join(m["content"] or "" for m in turns if m["role"] == "user"))
        answers.append("\n".join(m["content"] or "" for m in turns if m["role"] == "assistant"))
    return prompts, answers


def normalize(texts: Sequence[str | None]) -> pa.Array:
    # Python's NFKC (ASCII text is already NFKC): pyarrow 25's utf8_normalize leaves "é" decomposed in every form
    arr = pc.utf8_lower(pa.array([t if t is None or t.isascii() else unicodedata.normalize("NFKC", t)
                                  for t in texts], pa.string()))
    arr = pc.replace_substring_regex(pc.fill_null(arr, ""), r"['’`]", "")
    arr = pc.replace_substring_regex(arr, r"[^\pL\pN\pM]+", " ")
    if pc.any(pc.match_substring_regex(arr, CJK)).as_py():  # a cheap test saves a rewrite of every text
        arr = pc.replace_substring_regex(arr, CJK, r" \1 ")
    return arr


def normalized_text(text: str) -> str:
    """One text as the rules see it: its normalized words joined by single spaces."""
    return " ".join(normalize([text])[0].as_py().split())


def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit (wrapping uint64 arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def word_hash(words: Sequence[str]) -> np.ndarray:
    return np.fromiter((int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                        for w in words), dtype=np.uint64, count=len(words))


def words(texts: Sequence[str | None]) -> Ragged:
    """The normalized words of every text, as 64-bit hashes."""
    split = pc.utf8_split_whitespace(normalize(texts))
    flat = pc.list_flatten(split)
    row_of = pc.list_parent_indices(split).to_numpy()
    keep = pc.not_equal(flat, "")  # a blank text splits into one empty word
    flat, row_of = flat.filter(keep), row_of[keep.to_numpy(zero_copy_only=False)]
    encoded = pc.dictionary_encode(flat)
    dictionary = encoded.dictionary.to_pylist()
    values = word_hash(dictionary)[encoded.indices.to_numpy()] if len(flat) else np.zeros(0, np.uint64)
    offsets = np.zeros(len(split) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=len(split)), out=offsets[1:])
    return Ragged(values, offsets)


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2**64."""
    out = np.full(n, base, dtype=np.uint64)
    if n:
        out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)


def windows(words: Ragged, size: int, short_whole: bool = True) -> Ragged:
    """The hash of every run of `size` consecutive words of each row. A row shorter than `size` gives one
    window of all its words when `short_whole`, none otherwise; an empty row gives none.

    The hash of the words w_p .. w_(p+L-1) is sum_j w_(p+j) * B**(L-1-j) mod 2**64, from one prefix sum for all
    window lengths: B is odd, so it has an inverse mod 2**64 and the sum is B**(p+L-1) * (Q[p+L] - Q[p]) with
    Q[i] = sum_(q<i) w_q * B**-q (wrapping uint64 arithmetic is exact mod 2**64)."""
    lengths = words.lengths
    counts = np.where(lengths >= size, lengths - size + 1, (lengths > 0) if short_whole else 0).astype(np.int64)
    offsets = np.zeros(words.rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    rows = np.repeat(np.arange(words.rows), counts)
    starts = spans(words.offsets[:-1], counts)
    width = np.minimum(lengths[rows], size)
    powers, prefix = words.window_prefix
    with np.errstate(over="ignore"):
        h = powers[starts + width - 1] * (prefix[starts + width] - prefix[starts])
        return Ragged(mix64(h ^ (width.astype(np.uint64) * LENGTH_SALT)), offsets)


def pair_jaccard(ragged: Ragged, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the value sets of rows i and j, for every pair (i, j); 1.0 for two empty
    sets. Python sets: only the rows in some pair are built, and a pair costs a microsecond or two."""
    sets = ragged.sets(np.unique(pairs))
    out = np.empty(len(pairs))
    for p, (i, j) in enumerate(pairs.tolist()):
        x, y = sets[i], sets[j]
        both = len(x & y)
        union = len(x) + len(y) - both
        out[p] = both / union if union else 1.0
    return out
