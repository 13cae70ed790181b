"""The `format` stage: a selection (canonical conversations) + a base model's tokenizer → tokenized table.

Output: one row per sample (`id`, `input_ids`, `labels`, `length`, `num_supervised`, `text`), a quarantine
companion (samples with no assistant turn, unusable rows, samples whose answer lies beyond `max_length`),
`chat_template.jinja` and `template.json` (the exact format, for the tokenizer a training run saves), the
exports asked for under `exports/`, a histogram PNG and a markdown report.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from storage.store import DatasetRef, Store
from tasks import exports
from tasks.errors import BadInputError
from tasks.figures import png, subplots
from tasks.tokenize import QUARANTINE_SCHEMA, TOKENIZED_SCHEMA, ConversationEncoder

COLUMNS = ["id", "system", "messages", "meta", "tools"]


def load_tokenizer(store: Store, base_model: DatasetRef) -> Any:
    """The tokenizer of a model artifact (an HF model folder stored under files/model/)."""
    from transformers import AutoTokenizer

    folder = store.local_path(base_model.key, "files", "model")
    if not folder.is_dir():
        raise BadInputError(f"model artifact {base_model.key} has no files/model folder", field="base_model")
    return AutoTokenizer.from_pretrained(str(folder))


def tokenize_batches(encoder: ConversationEncoder, batches: Any, advance: Any = None
                 ) -> tuple[pa.Table, pa.Table, list[dict[str, Any]]]:
    """Tokenize canonical record batches; returns the tokenized table, the quarantine and the kept records."""
    tables, quarantined, kept = [], [], []
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise BadInputError(f"the selection lacks the canonical column(s) {missing}", field=missing[0])
        records = table.select(COLUMNS).to_pylist()
        result = encoder.encode(records)
        tables.append(result.table)
        quarantined.append(result.quarantine)
        ok = set(result.table.column("id").to_pylist())
        kept += [r for r in records if r["id"] in ok]
        if advance:
            advance(table.num_rows)
    out = pa.concat_tables(tables) if tables else TOKENIZED_SCHEMA.empty_table()
    quarantine = pa.concat_tables(quarantined) if quarantined else QUARANTINE_SCHEMA.empty_table()
    return out, quarantine, kept


def export_files(params: Any, table: pa.Table, records: list[dict[str, Any]],
                 warnings: list[str] | None = None) -> dict[str, bytes]:
    """The exports asked for (tasks/exports.py); records a format cannot hold are named in `warnings`."""
    files: dict[str, bytes] = {}
    done: dict[str, exports.Exported] = {}
    if "text" in params.exports:
        rows = ({"id": i, "text": t} for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
        files["exports/text.jsonl"], done["text.jsonl"] = exports.export_bytes(rows, "text", exports.Options(ids=True))
    if "xtuner" in params.exports:
        files["exports/xtuner.jsonl"], done["xtuner.jsonl"] = exports.export_bytes(
            records, "xtuner", exports.Options(system=params.system, ids=True))
    if "llamafactory" in params.exports:
        folder, done["llamafactory/data.json"] = exports.llamafactory_files(records, params.dataset_name,
                                                                            exports.Options(system=params.system))
        files.update((f"exports/llamafactory/{name}", data) for name, data in folder.items())
    for name, result in done.items():
        if result.skipped and warnings is not None:
            warnings.append(f"exports/{name} leaves out {result.left_out()}: "
                            "the format cannot hold them (tasks/exports.py)")
    return files


def histogram_png(table: pa.Table, max_length: int) -> bytes:

    lengths = table.column("length").to_numpy()
    share = table.column("num_supervised").to_numpy() / np.maximum(lengths, 1)
    fig, (left, right) = subplots(1, 2, figsize=(10, 3.6))
    left.hist(lengths, bins=50, color="#4472c4")
    left.axvline(max_length, color="#c00000", linestyle="--", label=f"max_length={max_length}")
    left.set(title="tokens per sample", xlabel="tokens", ylabel="samples")
    left.legend()
    right.hist(share, bins=50, range=(0, 1), color="#70ad47")
    right.set(title="supervised share per sample", xlabel="supervised tokens / tokens", ylabel="samples")
    fig.tight_layout()
    return png(fig)


def report(stats: dict[str, Any], example: str | None) -> str:
    share, length = stats["sample_supervised_share"], stats["length"]
    lines = [
        f"# format: template `{stats['template']}`, train_on `{stats['train_on']}`, max_length {stats['max_length']}",
        "",
        "| rows in | rows out | quarantined | truncated | tokens | supervised tokens | supervised share |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {stats['rows_in']:,} | {stats['rows_out']:,} | {stats['quarantined']:,} | {stats['truncated']:,} | "
        f"{stats['tokens']:,} | {stats['supervised_tokens']:,} | {stats['supervised_share']:.1%} |",
        "",
        f"Per sample: supervised share mean {share['mean']}, p10 {share['p10']}, median {share['p50']}, "
        f"p90 {share['p90']}; length mean {length['mean']}, median {length['p50']}, p95 {length['p95']}, "
        f"max {length['max']} tokens. BOS prepended to {stats['bos_added']:,} samples.",
    ]
    if stats["quarantine_reasons"]:
        lines += ["", "Quarantined: " + ", ".join(f"{k}: {v}" for k, v in stats["quarantine_reasons"].items())]
    lines += ["", *(f"**Warning:** {w}" for w in stats["warnings"])] if stats["warnings"] else []
    if example:
        lines += ["", "First sample as the model sees it:", "", "```text", example[:2000], "```"]
    return "\n".join(lines)
