"""The set of record ids seen so far, at 16 bytes an id, so a source of millions of rows dedupes in flat memory.

Ids are 128-bit hex digests; they are kept as numpy `S16` values in sorted runs that are merged like a binary
counter (each id is merged O(log n) times), and looked up by binary search in every run. A Python set of the
same ids costs about 75 bytes each.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class IdSet:
    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []  # sorted, disjoint, sizes decreasing

    def __len__(self) -> int:
        return sum(len(run) for run in self.runs)

    def _seen(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            found |= run[at] == keys
        return found

    def add_new(self, ids: Sequence[str]) -> np.ndarray:
        """A mask, True where the id is seen for the first time (earlier batches or earlier in this one);
        the new ids are added."""
        keys = np.array([bytes.fromhex(i) for i in ids], dtype="S16")
        first = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return first
        unique, index = np.unique(keys, return_index=True)
        fresh = ~self._seen(unique)
        first[index[fresh]] = True
        run = unique[fresh]
        while self.runs and len(self.runs[-1]) <= len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]))
        if len(run):
            self.runs.append(run)
        return first
