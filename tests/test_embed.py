"""The embed stage with the real bundled MiniLM on a few texts: batched = one at a time, keys, text views."""
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks.embed import (
    embedding_matrix,
    encode,
    encode_features,
    load_model,
    model_checksum,
    resolve_model,
    row_text,
)
from tasks.errors import BadInputError
from tasks.stages import embed as embed_stage
from tasks.stages.embed import EmbedConfig
from tasks.text import alpaca_user_content

TEXTS = [("Name three primary colors.", "", "Red, blue and yellow."),
         ("Translate to French.", "Good morning", "Bonjour."),
         ("Write a haiku about autumn leaves falling in a quiet forest at dusk.", "",
          "Crimson leaves drift down\nwhispering to the cold earth\nthe forest exhales"),
         ("What is 2 + 2?", "", "4")]


def records():
    return [make_record(messages=[{"role": "user", "content": alpaca_user_content(i, x)},
                                  {"role": "assistant", "content": o}],
                        system="Be brief." if n == 3 else None, uri="t.json", fmt="alpaca", row=n,
                        meta={"instruction": i, "input": x}) for n, (i, x, o) in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def minilm():
    return load_model(None, "cpu")


def test_text_views():
    rec = records()[1]
    assert row_text("car", rec["system"], rec["messages"], rec["meta"]) == \
        "Instruction: Translate to French. Input: Good morning Response: Bonjour."
    assert row_text("user", None, rec["messages"], rec["meta"]) == "Translate to French.\n\nGood morning"
    last = records()[3]
    assert row_text("full", last["system"], last["messages"], None) == \
        "System: Be brief. User: What is 2 + 2? Assistant: 4"


def test_batched_equals_one_at_a_time(minilm):
    texts = [row_text("car", r["system"], r["messages"], r["meta"]) for r in records()]
    done = []
    batched = encode(minilm, texts, batch_size=3, advance=done.append)
    assert batched.dtype == np.float32 and batched.shape == (4, 384) and sum(done) == 4
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    singles = np.stack([minilm.encode(t) for t in texts])  # CaR's loop
    singles /= np.linalg.norm(singles, axis=1, keepdims=True)
    np.testing.assert_allclose(batched, singles, atol=2e-5)
    # a paraphrase is nearer than an unrelated sentence
    a, b, c = encode(minilm, ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell."])
    assert a @ b > a @ c + 0.3


def test_one_pass_gives_the_sentence_embedding_of_sentence_transformers_and_the_layer_mean(minilm):
    """The embedding column is what sentence-transformers' own encode gives; layer_mean is every layer's hidden
    states averaged and mean-pooled over the real tokens, as transformers computes them."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    texts = [row_text("car", r["system"], r["messages"], r["meta"]) for r in records()]
    texts.append("Instruction: Summarize. Response: " + "A long answer that runs past the token limit. " * 60)
    features = encode_features(minilm, texts, batch_size=3)
    plain = SentenceTransformer(str(resolve_model(None)), device="cpu")
    np.testing.assert_allclose(features.embedding, plain.encode(texts, normalize_embeddings=True), atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    hf = AutoModel.from_pretrained(resolve_model(None)).eval()
    expected = []
    with torch.inference_mode():
        for text in texts:  # one at a time: no padding
            enc = tokenizer(text, truncation=True, max_length=minilm.max_seq_length, return_tensors="pt")
            hidden = hf(**enc, output_hidden_states=True).hidden_states
            assert len(hidden) == 7  # the embedding layer and six transformer layers
            expected.append(torch.stack(hidden[1:]).mean(0)[0].mean(0).numpy())
    np.testing.assert_allclose(features.layer_mean, np.stack(expected), atol=1e-4)
    assert np.abs(features.layer_mean - features.embedding).max() > 0.1  # a feature of its own


def test_stage_output_and_model_identity(store, tmp_path):
    conv = store.publish_table("conv", "ingest", records_to_table(records()))
    result = run_stage(embed_stage.STAGE, EmbedConfig(batch_size=2, device="cpu"), {"conversations": conv}, store)
    table = store.read_table(result.ref.key)
    kind = table.schema.field("embedding").type
    assert table.schema.names == ["id", "embedding", "layer_mean"]
    assert kind.value_type == pa.float32() and pa.types.is_list(kind)
    assert table.schema.field("layer_mean").type == kind
    assert embedding_matrix(table.column("layer_mean")).shape == (4, 384)
    assert table.column("id").to_pylist() == [r["id"] for r in records()]
    vectors = embedding_matrix(table.column("embedding"))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert result.stats["dim"] == 384 and result.stats["rows"] == 4 and result.stats["device"] == "cpu"
    # batch size and device stay out of the key; the text view and the model's files do not
    same = EmbedConfig(batch_size=64)
    assert embed_stage.STAGE.key(same, {"conversations": conv.key}) == result.ref.key
    assert embed_stage.STAGE.key(EmbedConfig(text="user"), {"conversations": conv.key}) != result.ref.key
    bundled = resolve_model(None)
    copy = tmp_path / "minilm"
    shutil.copytree(bundled, copy)
    local = EmbedConfig(model=str(copy))
    key_before = embed_stage.STAGE.key(local, {"conversations": conv.key})
    with open(copy / "1_Pooling" / "config.json", "a") as fh:
        fh.write(" ")
    assert embed_stage.STAGE.key(local, {"conversations": conv.key}) != key_before


def test_hub_name_resolves_from_the_local_cache(tmp_path):
    """A hub name is looked up in the Hugging Face cache (offline here): a cache laid out by hand works."""
    bundled = resolve_model(None)
    snapshot = tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "0123abcd"
    for path in bundled.rglob("*"):
        if path.is_file():
            (snapshot / path.relative_to(bundled)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, snapshot / path.relative_to(bundled))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    found = resolve_model("all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert found == snapshot and model_checksum(found) == model_checksum(bundled)
    with pytest.raises(BadInputError, match="not in the Hugging Face cache"):
        resolve_model("nobody/no-such-model", cache_dir=tmp_path)


def test_bad_input(store):
    empty = store.publish_table("empty", "ingest", records_to_table([]))
    with pytest.raises(BadInputError, match="no rows"):
        run_stage(embed_stage.STAGE, EmbedConfig(device="cpu"), {"conversations": empty}, store)
    with pytest.raises(BadInputError, match="embed.model"):
        embed_stage.STAGE.key(EmbedConfig(model="/no/such/folder"), {})


def test_int8_is_close_to_fp32_and_part_of_the_key(minilm, store):
    texts = [row_text("car", r["system"], r["messages"], r["meta"]) for r in records()]
    int8 = load_model(None, "cpu", "int8")
    quantized = encode(int8, texts, batch_size=2, precision="int8")
    exact = encode(minilm, texts, batch_size=2)
    assert quantized.dtype == np.float32 and quantized.shape == exact.shape
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cosine = (quantized * exact).sum(axis=1)
    assert cosine.min() > 0.95 and cosine.mean() > 0.97
    assert not np.allclose(quantized, exact, atol=1e-4)  # close, yet really quantized
    with pytest.raises(ValueError, match="int8"):
        encode(minilm, texts, precision="int8")
    with pytest.raises(ValueError, match="int8"):
        encode(int8, texts)
    conv = store.publish_table("conv", "ingest", records_to_table(records()))
    keys = {embed_stage.STAGE.key(EmbedConfig(precision=p), {"conversations": conv.key})
            for p in ("fp32", "bf16", "int8")}
    assert len(keys) == 3
    # dynamic quantization scales activations per batch: same batches, same vectors
    result = run_stage(embed_stage.STAGE, EmbedConfig(precision="int8", device="cpu", batch_size=2),
                       {"conversations": conv}, store)
    assert result.stats["precision"] == "int8"
    stored = embedding_matrix(store.read_table(result.ref.key).column("embedding"))
    np.testing.assert_allclose(stored, quantized, atol=1e-5)
