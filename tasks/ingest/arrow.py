"""Arrow arrays built from their buffers: the same arrays as `pa.array(values, type)`, without the pandas import
that pyarrow does on its first conversion of Python objects (about 0.3 s of every ingest run in a fresh process)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

MAX_STRING_BYTES = 2**31 - 1  # pa.string() has int32 offsets


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _string_array(count: int, lengths: np.ndarray, data: bytes, valid: np.ndarray | None) -> pa.Array:
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    validity = None if valid is None else _validity(valid)
    null_count = 0 if valid is None else int(count - valid.sum())
    return pa.Array.from_buffers(pa.string(), count, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=null_count)


def strings(values: Sequence[str | None]) -> pa.Array:
    """A pa.string() array of the values (None → null)."""
    count, nulls = len(values), values.count(None)
    if nulls == count:
        return pa.nulls(count, pa.string())
    texts = values if not nulls else ["" if value is None else value for value in values]
    valid = None if not nulls else np.fromiter((value is not None for value in values), dtype=bool, count=count)
    joined = "".join(texts)
    data = joined.encode("utf-8")
    if len(data) > MAX_STRING_BYTES:
        return pa.array(values, pa.string())
    if len(data) == len(joined):  # all ASCII (the common case): a text's length in characters is its byte length
        return _string_array(count, np.fromiter(map(len, texts), dtype=np.int64, count=count), data, valid)
    encoded = [text.encode("utf-8") for text in texts]
    return _string_array(count, np.fromiter(map(len, encoded), dtype=np.int64, count=count), b"".join(encoded), valid)


def repeated(value: str | None, count: int) -> pa.Array:
    """A pa.string() array of `count` times the same value (None → nulls)."""
    if value is None or not count:
        return pa.nulls(count, pa.string())
    encoded = value.encode("utf-8")
    if len(encoded) * count > MAX_STRING_BYTES:
        return strings([value] * count)
    return _string_array(count, np.full(count, len(encoded), dtype=np.int64), encoded * count, None)


def numbers(values: Sequence[int] | np.ndarray, dtype: type = np.int64) -> pa.Array:
    """An int64 (or int32) array of non-null integers."""
    data = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(pa.from_numpy_dtype(data.dtype), len(data), [None, pa.py_buffer(data)])


def floats(values: Sequence[float | None]) -> pa.Array:
    """A float64 array of the values (None → null)."""
    valid = np.fromiter((value is not None for value in values), dtype=bool, count=len(values))
    data = np.fromiter((0.0 if value is None else value for value in values), dtype=np.float64, count=len(values))
    return pa.Array.from_buffers(pa.float64(), len(values), [_validity(valid), pa.py_buffer(data)],
                                 null_count=int(len(values) - valid.sum()))


def mask(values: np.ndarray) -> pa.Array:
    """A boolean array (for Table.filter) of a numpy bool array."""
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
