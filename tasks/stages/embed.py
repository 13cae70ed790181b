"""`embed`: one L2-normalized sentence embedding per conversation (tasks/embed.py), for clustering and semantic
dedup, and the all-layer mean of the same forward pass (`layer_mean`), the probe scorer's feature. The model's
name and a checksum of its files are in the key, so a changed model folder re-embeds instead of serving stale
vectors."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import Requirement, Stage, StageContext, StageOutput, concat_parts, padding_share
from storage.store import DatasetRef, row_range
from tasks.calibrate import measured
from tasks.device import RESOLVED_IN_KEY, PrecisionSetting, PrecisionUse, use_available_cores
from tasks.embed import (
    BUNDLED_MODEL,
    FEATURES,
    READ_ROWS,
    batch_size_for,
    embedding_dimension,
    embeddings_table,
    encode_features,
    load_model,
    model_checksum,
    resolve_model,
    table_texts,
)
from tasks.errors import BadInputError

PART_ROWS = 4096  # rows per part: 20-50 s on 2 CPU cores (bf16-fp32), what a crash can cost


class EmbedConfig(Section):
    model: str | None = Field(
        None, description="sentence-transformers model: local folder or hub name; the bundled all-MiniLM-L6-v2 when "
                          "empty. Its name and a checksum of its files are part of the cache key")
    text: Literal["car", "user", "full"] = Field(
        "car", description="what is embedded: car = CaR's 'Instruction: … Input: … Response: …' (multi-turn: "
                           "turns with role names), user = the user turns, full = system prompt and every turn")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="auto: bf16 where the GPU or the CPU has bf16 units (AMX-BF16, AVX512-BF16), else "
                    "fp32; fp32: exact; bf16: bfloat16 autocast, cosine to fp32 above 0.9999 and the same "
                    "clusters (ARI 0.97); int8: dynamic int8 quantization of the Linear layers (CPU only), "
                    "mean cosine to fp32 0.99; its activation scales are per batch, so vectors "
                    "vary slightly with batch_size")
    batch_size: int | None = Field(None, ge=1, json_schema_extra=NOT_IN_KEY,
                                   description="texts per forward pass; when empty 16 on CPU in fp32, 32 in bf16, "
                                               "128 on a GPU")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=NOT_IN_KEY,
                                                   description="auto: cuda when available")
    part_rows: int = Field(PART_ROWS, ge=0, json_schema_extra=NOT_IN_KEY,
                           description="rows per part: each part is stored as it finishes, so a crash loses at most "
                                       "one (0: one piece)")
    shards: int = Field(1, ge=1, json_schema_extra=NOT_IN_KEY,
                        description="embed in this many row ranges side by side (one task each: Dask/Ray workers), "
                                    "then gather them")


PRECISION = PrecisionUse(lambda p: p.precision, "embed.precision", supports=("auto", "fp32", "bf16", "int8"),
                         device=lambda p: p.device, measure=measured("encoder-inference"))


def model_identity(params: EmbedConfig) -> dict[str, str]:
    """Stage-key material: which model, by name and by content, and the precision `auto` resolves to here."""
    return {"model": params.model or BUNDLED_MODEL, "weights_sha256": model_checksum(resolve_model(params.model)),
            **PRECISION.key(params)}


def build(ctx: StageContext, conversations: DatasetRef) -> StageOutput:
    params = ctx.params
    if conversations.rows == 0:
        raise BadInputError(f"dataset {conversations.key} has no rows to embed", field="conversations")
    folder = resolve_model(params.model)
    precision = PRECISION.planned(params, ctx.fingerprint)
    device = precision.device
    cores = use_available_cores()
    model = load_model(params.model, device, precision.name)
    batch_size = params.batch_size or batch_size_for(device, precision.name)
    stats: dict[str, Any] = {"model": params.model or BUNDLED_MODEL, "model_path": str(folder),
                             "weights_sha256": model_checksum(folder), "text": params.text, **precision.stats(),
                             "threads": cores, "dim": embedding_dimension(model), "batch_size": batch_size,
                             "max_seq_length": model.max_seq_length}
    start, stop = row_range(conversations.rows, ctx.shard)
    advance = ctx.progress(stop - start, f"embed ({device})")

    def tables() -> Iterator[pa.Table]:
        began, rows, tokens, padded = time.perf_counter(), 0, 0, 0
        for batch in ctx.store.iter_batches(conversations.key, READ_ROWS, ["id", "system", "messages", "meta"],
                                            part=ctx.shard):
            table = pa.Table.from_batches([batch])
            features = encode_features(model, table_texts(table, params.text, start + rows), batch_size, advance,
                                       precision.name)
            tokens, padded = tokens + features.tokens, padded + features.padded_tokens
            for name in FEATURES:
                vectors = getattr(features, name)
                if not np.isfinite(vectors).all():
                    bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
                    raise BadInputError(f"the model returned a non-finite {name}", row=start + rows + bad,
                                        field=f"{name} (id {table.column('id')[bad].as_py()})")
            rows += table.num_rows
            yield embeddings_table(table.column("id").to_pylist(), features)
        seconds = time.perf_counter() - began
        stats.update(rows=rows, seconds=round(seconds, 2), rows_per_s=round(rows / max(seconds, 1e-9), 1),
                     tokens=tokens, padded_tokens=padded, padding_share=padding_share(tokens, padded))
        ctx.log.info("embed: %d rows in %.1fs on %s, %s (%.0f rows/s, %.1f%% padding)", rows, seconds, device,
                     precision.name, stats["rows_per_s"], 100 * stats["padding_share"])

    return StageOutput(table=tables(), stats=stats)


def gather(ctx: StageContext, **part: DatasetRef) -> StageOutput:
    """The parts' rows in order, their stats merged (with the padding share over all of them)."""
    output = concat_parts(ctx, **part)
    output.stats["padding_share"] = padding_share(output.stats.get("tokens", 0), output.stats.get("padded_tokens", 0))
    return output


STAGE = Stage("embed", "2", build, params=EmbedConfig, section="embed", output="embeddings", tags=("gpu", "model"),
              fingerprint=model_identity, shard_input="conversations",
              part_rows=lambda p: p.part_rows or None, gather=gather,
              requires=(Requirement("sentence_transformers", "pip install sentence-transformers"),),
              description="sentence embeddings and all-layer means of the conversations")
