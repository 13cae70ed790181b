"""Alpaca-52k as the canonical table and its MiniLM embeddings, cached under benchmarks/results/ (ignored by
git): embedding 52k rows takes most of an hour on two busy cores, so it is done once per subset."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data_52k.json.gz"
RESULTS = ROOT / "benchmarks" / "results"


def alpaca_table() -> pa.Table:
    """Alpaca-52k read by the ingest code (exact duplicates already dropped, as the pipeline does)."""
    from tasks.ingest import read_source
    from tasks.ingest.config import SourceConfig

    if not ALPACA.exists():
        raise SystemExit(f"the dedup benchmark reads Alpaca-52k from {ALPACA} (../shared/data)")
    return pa.concat_tables(list(read_source(SourceConfig(path=str(ALPACA))).tables))


PIECE_ROWS = 4096  # embeddings are cached in pieces, so a larger subset reuses a smaller one's work


def piece_path(table: pa.Table, start: int) -> Path:
    ids = table.column("id").slice(start, PIECE_ROWS).to_pylist()
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()
    return RESULTS / f"alpaca-minilm-{start:06d}-{len(ids)}-{digest}.npy"


def embed_piece(table: pa.Table, start: int, model: object | None = None) -> np.ndarray:
    """MiniLM embeddings (as the embed stage makes them: CaR text, L2-normalized) of rows
    [start, start + PIECE_ROWS), from the cache or computed and cached."""
    from tasks.embed import encode, load_model, table_texts

    path = piece_path(table, start)
    if path.exists():
        return np.load(path)
    vectors = encode(model or load_model(None, "auto"), table_texts(table.slice(start, PIECE_ROWS), "car"), 16)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), vectors)
    path.with_suffix(".tmp.npy").rename(path)
    return vectors


def cached_embeddings(table: pa.Table, rows: int) -> np.ndarray:
    """(rows, 384) embeddings of the first `rows` rows of `table`."""
    from tasks.embed import load_model

    starts = range(0, min(rows, table.num_rows), PIECE_ROWS)
    model = None if all(piece_path(table, s).exists() for s in starts) else load_model(None, "auto")
    return np.concatenate([embed_piece(table, s, model) for s in starts])[:rows]


def main() -> None:
    """`python -m benchmarks._dedup_data START`: embed and cache one piece (run each under the CPU lock, so the
    lock is free between pieces)."""
    import sys

    embed_piece(alpaca_table(), int(sys.argv[1]))


if __name__ == "__main__":
    main()
