"""ROUGE-L de-duplication of generated instructions, exact to `rouge_score` but fast.

Alpaca scores every candidate against every instruction so far with `rouge_scorer._score_lcs` in a fresh
process pool per candidate and drops it when the best ROUGE-L F1 is above 0.7. Here each instruction is
tokenized once (with rouge_score's own default tokenizer), its tokens become one character each, and the
LCS lengths of a whole block of candidates against the pool come from rapidfuzz's bit-parallel C++ `cdist`
on all cores. F1 is then computed with the same float operations as rouge_score, so every keep/drop decision
equals the reference loop. Candidates are decided in order: a kept candidate joins the pool at once.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.7
PARALLEL_MIN_PAIRS = 2_000_000
SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True)
class Verdict:
    kept: bool
    max_rouge_l: float  # best ROUGE-L F1 against the pool (0.0 for an empty pool)
    most_similar: str | None  # the instruction that scored it


TOKEN_RE = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's DefaultTokenizer(use_stemmer=False) in one regex pass: it lowercases, turns every run of
    other characters into a space, splits, and keeps the [a-z0-9]+ tokens (tested equal on odd Unicode)."""
    return TOKEN_RE.findall(text.lower())


def rouge_l_f1(lcs: np.ndarray, target_len: np.ndarray, prediction_len: np.ndarray) -> np.ndarray:
    """rouge_score's `_score_lcs(target, prediction).fmeasure`, element-wise, with the same float steps."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / prediction_len
        recall = lcs / target_len
        f1 = 2 * precision * recall / (precision + recall)
    return np.where((target_len > 0) & (prediction_len > 0) & (precision + recall > 0), f1, 0.0)


class RougeDeduplicator:
    """The pool of instructions so far; `add(candidates)` keeps those whose best ROUGE-L F1 is <= threshold."""

    def __init__(self, existing: Sequence[str] = (), threshold: float = DEFAULT_THRESHOLD, workers: int = -1,
                 block: int = 256):
        self.threshold, self.workers, self.block = threshold, workers, block
        self._vocab: dict[str, str] = {}
        self.texts: list[str] = []
        self._codes: list[str] = []
        self._lengths: list[int] = []
        for text in existing:  # the existing pool is never de-duplicated against itself (as in Alpaca)
            self._append(text, self.encode(text))

    def __len__(self) -> int:
        return len(self.texts)

    def encode(self, text: str) -> str:
        """The text's rouge tokens, one character per distinct token (so LCS over tokens = LCS over chars)."""
        chars = []
        for token in rouge_tokens(text):
            char = self._vocab.get(token)
            if char is None:
                index = len(self._vocab)
                char = self._vocab[token] = chr(index + len(SURROGATES) if index >= SURROGATES.start else index)
            chars.append(char)
        return "".join(chars)

    def _append(self, text: str, code: str) -> None:
        self.texts.append(text)
        self._codes.append(code)
        self._lengths.append(len(code))

    @staticmethod
    def _lcs(targets: list[str], predictions: list[str], workers: int) -> np.ndarray:
        from rapidfuzz.distance import LCSseq
        from rapidfuzz.process import cdist

        # Threads only where they pay off: small comparisons (a few candidates against the seeds) stay on one
        # thread, which also keeps short CLI runs clear of an intermittent abort at exit with the thread pool.
        if len(targets) * len(predictions) < PARALLEL_MIN_PAIRS:
            workers = 1
        return cdist(targets, predictions, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)

    def _scores(self, targets: list[str], predictions: list[str]) -> np.ndarray:
        """Every target's ROUGE-L F1 against every prediction."""
        lcs = self._lcs(targets, predictions, self.workers)
        target_len = np.array([len(t) for t in targets], dtype=np.float64)[:, None]
        prediction_len = np.array([len(p) for p in predictions], dtype=np.float64)[None, :]
        return rouge_l_f1(lcs.astype(np.float64), target_len, prediction_len)

    def _best_in_pool(self, codes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each code's best F1 in the pool and where. The argmax is taken on 2*lcs/(m+n), one pass; the exact
        rouge_score float is then computed only where that ratio is within rounding of the row's best."""
        lcs = self._lcs(codes, self._codes, self.workers)
        target_len = np.array([len(c) for c in codes], dtype=np.float64)
        pool_len = np.asarray(self._lengths, dtype=np.float64)
        ratio = lcs / np.maximum(target_len[:, None] + pool_len[None, :], 1.0)  # 0 when either is empty
        top = ratio.max(axis=1)
        best, where = np.zeros(len(codes)), np.zeros(len(codes), dtype=np.int64)
        for row in np.flatnonzero(top > 0):
            near = np.flatnonzero(ratio[row] >= top[row] * (1 - 1e-9))
            exact = rouge_l_f1(lcs[row, near].astype(np.float64), target_len[row], pool_len[near])
            k = int(exact.argmax())
            best[row], where[row] = exact[k], near[k]
        return best, where

    def add(self, candidates: Sequence[str]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for start in range(0, len(candidates), self.block):
            verdicts += self._add_block(list(candidates[start:start + self.block]))
        return verdicts

    def _add_block(self, texts: list[str]) -> list[Verdict]:
        codes = [self.encode(t) for t in texts]
        pool_size = len(self.texts)
        if pool_size:
            pool_max, pool_best = self._best_in_pool(codes)
        within = self._scores(codes, codes)  # row j = candidate j as target, as Alpaca scores a new one
        kept_rows: list[int] = []
        verdicts = []
        for j in range(len(texts)):
            best, similar = (float(pool_max[j]), self.texts[pool_best[j]]) if pool_size else (0.0, None)
            similar = similar if best > 0 else None
            if kept_rows:
                row = within[j, kept_rows]
                k = int(row.argmax())
                if row[k] > best:
                    best, similar = float(row[k]), texts[kept_rows[k]]
            kept = best <= self.threshold
            verdicts.append(Verdict(kept, best, similar))
            if kept:
                kept_rows.append(j)
        for j in kept_rows:
            self._append(texts[j], codes[j])
        return verdicts
