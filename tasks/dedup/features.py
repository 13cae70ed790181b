"""The word-level views of a conversation table that the rules share, each computed once and only if needed."""
from __future__ import annotations

from functools import cached_property

import numpy as np
import pyarrow as pa

from tasks.dedup.text import Ragged, concat_rows, prompts_and_answers, windows, words


class RowFeatures:
    """Prompt (user turns) and answer (assistant turns) of every row as normalized word hashes, and the
    shingles (runs of `shingle` words) of each; the whole text's shingles are the prompt's and the answer's
    (no shingle spans the two)."""

    def __init__(self, table: pa.Table, shingle: int):
        self.ids = table.column("id").to_pylist()
        self.prompts, self.answers = prompts_and_answers(table)
        self.shingle = shingle

    @property
    def rows(self) -> int:
        return len(self.ids)

    @cached_property
    def prompt_words(self) -> Ragged:
        return words(self.prompts)

    @cached_property
    def answer_words(self) -> Ragged:
        return words(self.answers)

    @cached_property
    def prompt_shingles(self) -> Ragged:
        return windows(self.prompt_words, self.shingle)

    @cached_property
    def full_shingles(self) -> Ragged:
        return concat_rows([self.prompt_shingles, windows(self.answer_words, self.shingle)])

    @cached_property
    def answer_lengths(self) -> np.ndarray:
        """Characters of each answer: the tie-break when there are no scores."""
        return np.fromiter((len(a) for a in self.answers), dtype=np.int64, count=self.rows)
