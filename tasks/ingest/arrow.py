"""Arrow arrays built from their buffers: the same arrays as `pa.array(values, type)`, without the pandas import
that pyarrow does on its first conversion of Python objects (about 0.3 s of every ingest run in a fresh process)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

MAX_STRING_BYTES = 2**31 - 1  # pa.string() has int32 offsets


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def strings(values: Sequence[str | None]) -> pa.Array:
    """A pa.string() array of the values (None → null)."""
    encoded = [b"" if value is None else value.encode("utf-8") for value in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if lengths.sum() > MAX_STRING_BYTES:
        return pa.array(values, pa.string())
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    valid = np.fromiter((value is not None for value in values), dtype=bool, count=len(encoded))
    return pa.Array.from_buffers(pa.string(), len(encoded), [_validity(valid), pa.py_buffer(offsets),
                                                             pa.py_buffer(b"".join(encoded))],
                                 null_count=int(len(encoded) - valid.sum()))


def numbers(values: Sequence[int] | np.ndarray, dtype: type = np.int64) -> pa.Array:
    """An int64 (or int32) array of non-null integers."""
    data = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(pa.from_numpy_dtype(data.dtype), len(data), [None, pa.py_buffer(data)])


def mask(values: np.ndarray) -> pa.Array:
    """A boolean array (for Table.filter) of a numpy bool array."""
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
