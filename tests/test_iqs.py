"""IQS: revision layouts and bad input (fast), and a tiny real COMET model trained, reloaded in a new
process, evaluated on held-back CaR pairs and used to score a conversation table."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import BadInputError
from tasks.iqs.revisions import (
    load_pairs,
    normalize_whitespace,
    ranking_triples,
    read_revisions,
    regression_rows,
    split_pairs,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO_REVISIONS = ROOT / "demo" / "revisions_demo.jsonl"


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def record(raw: str, revised: str, **extra) -> dict:
    return {"Raw Instruction": "List two colours.", "Raw Input": "", "Raw Response": raw,
            "Revised Instruction": "List two colours.", "Revised Input": "", "Revised Response": revised, **extra}


# -- layouts ---------------------------------------------------------------------------------------------
def test_records_become_car_text_with_distance_filter(tmp_path):
    path = tmp_path / "rev.jsonl"
    long_answer = "Two colours are red and blue.\nRed is a warm colour; blue is a cool one. " * 4
    path.write_text("\n".join(json.dumps(r) for r in [
        record("red", long_answer),  # far apart: kept
        record("red blue", "red, blue"),  # closer than 200 characters: dropped
        record("red", "blue", Distance=900),  # a given Distance wins
    ]))
    pairs, stats = load_pairs([path])
    assert stats == {"pairs_read": 3, "pairs_below_min_distance": 1, "pairs_kept": 2}
    assert pairs[0].raw == "Instruction: List two colours. Response: red"
    assert pairs[0].distance >= 200 and pairs[1].distance == 900
    rows = regression_rows(pairs)
    assert rows.column("score").to_pylist() == [0.0, 1.0, 0.0, 1.0]
    assert "\n" not in rows.column("src")[1].as_py()
    assert "\n" in regression_rows(pairs, normalize=False).column("src")[1].as_py()
    triples = ranking_triples(pairs).to_pylist()
    assert triples[0] == {"src": "Instruction: List two colours.", "pos": "Response: " + normalize_whitespace(
        long_answer), "neg": "Response: red"}


def test_csv_pairs_and_deterministic_split(tmp_path):
    rows = [["src", "score"]]
    for i in range(40):
        rows += [[f"Instruction: q{i} Response: short", "0"], [f"Instruction: q{i} Response: long answer {i}", "1"]]
    pairs, layout = read_revisions(write_csv(tmp_path / "p.csv", rows))
    assert layout == "pairs_csv" and len(pairs) == 40
    train, valid = split_pairs(pairs, 0.25, seed=0)
    assert len(train) + len(valid) == 40 and 0 < len(valid) < 20
    assert split_pairs(list(reversed(pairs)), 0.25, seed=0)[1] == list(reversed(valid))  # order-free
    # prepared CSVs keep close pairs unless asked
    assert load_pairs([tmp_path / "p.csv"])[1]["pairs_kept"] == 40
    assert load_pairs([tmp_path / "p.csv"], filter_csv=True, min_distance=12)[1]["pairs_kept"] == 30


@pytest.mark.parametrize("rows, field, message", [
    ([["text", "score"], ["a", "0"]], "src", "missing column(s) src"),
    ([["src", "label"], ["a", "0"]], "score", "missing column(s) score"),
    ([["src", "score"], ["Instruction: a Response: b", "0"], ["Instruction: a Response: c", "1.5"]],
     "score", "outside [0, 1]"),
    ([["src", "score"], ["Instruction: a Response: b", "0"], ["  ", "1"]], "src", "empty text"),
    ([["src", "score"], ["Instruction: a Response: b", "0"], ["Instruction: a Response: c", "x"]],
     "score", "not a number"),
    ([["src", "score"], ["Instruction: a Response: b", "1"], ["Instruction: a Response: c", "0"]],
     "score", "raw row then a better-scored revision"),
])
def test_bad_csv_names_file_row_and_field(tmp_path, rows, field, message):
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(BadInputError) as info:
        read_revisions(path)
    assert info.value.field == field and message in str(info.value) and "bad.csv" in str(info.value)


def test_bad_records(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record("red", "")) + "\n")
    with pytest.raises(BadInputError, match="row 1, field 'Revised Response': empty text"):
        read_revisions(path)
    path.write_text(json.dumps({"Raw Instruction": "x"}) + "\n")
    with pytest.raises(BadInputError, match="field 'Raw Response'"):
        read_revisions(path)
    path.write_text(json.dumps(record("red", "red.")) + "\n")
    with pytest.raises(BadInputError, match="no revision pairs left"):
        load_pairs([path])


def test_demo_revisions_are_valid():
    pairs, stats = load_pairs([DEMO_REVISIONS])
    assert stats["pairs_read"] == 40 and stats["pairs_kept"] >= 35


def test_rank_breaks_ties_by_id_and_baselines_compare_pairs():
    import numpy as np

    from tasks.iqs.evaluate import evaluate_pairs
    from tasks.iqs.revisions import RevisionPair
    from tasks.iqs.score import rank

    assert rank(["b", "a", "c"], np.array([0.5, 0.5, 0.9])).tolist() == [3, 2, 1]
    pairs = [RevisionPair("Instruction: a Response: one two", "Instruction: a Response: one\ntwo", 9, "x:1"),
             RevisionPair("Instruction: b Response: one", "Instruction: b Response: one two three", 9, "x:3")]
    result = evaluate_pairs(pairs, scorer=lambda texts: np.array([len(t) for t in texts], float))
    assert result["pairwise_accuracy"] == 0.5  # the equal-length pair is a tie: a miss
    assert result["baselines"] == {"response_length_words": 0.5, "newline_then_length": 1.0}
    assert result["baselines_normalized"]["newline_then_length"] == 0.5


def test_demo_config_names_the_demo_revisions():
    from flows.config import load_config

    config = load_config(ROOT / "demo" / "pipeline.yaml")
    assert [Path(p) for p in config.iqs.revisions] == [DEMO_REVISIONS]
    assert config.iqs.scorer == "comet" and config.iqs.epochs == 1


# -- a real tiny model -------------------------------------------------------------------------------------
def run_cli(*args: str, home: Path, **env: str) -> dict:
    env = {**os.environ, "SFTFLOW_HOME": str(home), **env}
    done = subprocess.run([sys.executable, "-m", "flows", *args, "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_tiny_model_trains_reloads_in_new_process_and_ranks(tmp_path, shared_data):
    from storage.schema import make_record, records_to_table
    from storage.stage import run_stage
    from storage.store import Store
    from tasks.scorers.comet import CometConfig
    from tasks.stages.iqs import STAGE as SCORE_STAGE
    from tasks.stages.iqs_train import STAGE as TRAIN_STAGE

    with (shared_data / "car" / "APE_score_train.csv").open() as fh:
        train = list(csv.reader(fh))
    with (shared_data / "car" / "APE_score_valid.csv").open() as fh:
        valid = list(csv.reader(fh))
    train_csv = write_csv(tmp_path / "train.csv", train[:1 + 2 * 48])
    valid_csv = write_csv(tmp_path / "valid.csv", valid[:1 + 2 * 8])
    held_back = write_csv(tmp_path / "held_back.csv", [valid[0]] + valid[1 + 2 * 8:1 + 2 * 40])

    home = tmp_path / "home"
    store = Store(str(home / "store"))
    params = CometConfig(revisions=[str(train_csv)], validation_revisions=[str(valid_csv)], epochs=1,
                       nr_frozen_epochs=0, hidden_sizes=[64], learning_rate=1e-3, accumulate_grad_batches=1)
    result = run_stage(TRAIN_STAGE, params, {}, store)
    files = {f["name"] for f in store.manifest(result.ref.key)["files"]}
    assert {"files/model/hparams.yaml", "files/model/checkpoints/model.ckpt", "files/probe.json",
            "files/metrics.json", "files/model.json"} <= files
    assert result.ref.kind == "model"
    info = json.loads(store.read_file(result.ref.key, "model.json"))
    assert store.read_table(info["data_key"]).num_rows == 2 * (48 + 8)

    evaluated = run_cli("iqs", "eval", "--model", result.ref.key, "--pairs", str(held_back), home=home)
    assert evaluated["pairs"] == 32
    assert evaluated["pairwise_accuracy"] > 0.6, evaluated  # chance is 0.5
    assert set(evaluated["baselines"]) == {"response_length_words", "newline_then_length", "minilm_logreg"}

    pairs, _ = read_revisions(held_back)
    records = []
    for i, pair in enumerate(pairs[:6]):
        for side, text in (("raw", pair.raw), ("revised", pair.revised)):
            instruction, response = text.split(" Response: ", 1)
            messages = [{"role": "user", "content": instruction.removeprefix("Instruction: ")},
                        {"role": "assistant", "content": response}]
            records.append(make_record(uri="test", fmt="test", row=len(records), system=None, messages=messages,
                                       meta={"pair": i, "side": side}))
    store.publish_table("conversations-test", "ingest", records_to_table(records))
    # exact (fp32) scores first: `auto` is bf16 on CPUs with bf16 units, one of the fast paths checked below
    scored = run_cli("iqs", "score", "--model", result.ref.key, "conversations-test", "--set", "precision=fp32",
                     home=home)
    table = store.read_table(scored["key"]).to_pylist()
    assert len(table) == 12 and sorted(r["iqs_rank"] for r in table) == list(range(1, 13))
    assert all(isinstance(r["iqs_score"], float) for r in table)
    again_params = CometConfig.model_validate({**info["hyperparameters"], "model": result.ref.key,
                                               "precision": "fp32"})
    again = run_stage(SCORE_STAGE, again_params,
                      {"conversations": store.ref("conversations-test"), "iqs_model": result.ref}, store)
    assert again.status == "cached" and again.ref.key == scored["key"]  # unchanged data and model

    exact = np.array([r["iqs_score"] for r in table])
    for precision, tolerance in (("bf16", 0.05), ("int8", 0.1)):  # faster CPU paths: close, not equal
        fast_params = again_params.model_copy(update={"precision": precision})
        assert TRAIN_STAGE.key(fast_params, {}) == TRAIN_STAGE.key(again_params, {})  # no retraining
        fast = run_stage(SCORE_STAGE, fast_params, {"conversations": store.ref("conversations-test"),
                                                    "iqs_model": result.ref}, store)
        assert fast.status == "ran" and fast.ref.key != scored["key"]
        fast_scores = np.array([r["iqs_score"] for r in store.read_table(fast.ref.key).to_pylist()])
        assert np.abs(fast_scores - exact).max() < tolerance, precision


def test_probe_model_scores_with_the_embed_stage_features(store):
    import numpy as np

    from storage.schema import make_record, records_to_table
    from storage.stage import run_stage
    from tasks.embed import EMBEDDING_SCHEMA, Features, embeddings_table, encode_features, load_model
    from tasks.iqs.probe import Probe
    from tasks.scorers.comet import CometConfig
    from tasks.scorers.probe import ProbeConfig
    from tasks.stages.iqs import STAGE as SCORE_STAGE
    from tasks.stages.iqs_train import STAGE as TRAIN_STAGE
    from tasks.text import table_texts

    params = ProbeConfig(revisions=[str(DEMO_REVISIONS)], valid_fraction=0.25)
    trained = run_stage(TRAIN_STAGE, params, {}, store)
    files = {f["name"] for f in store.manifest(trained.ref.key)["files"]}
    assert "files/probe.json" in files and not any(f.startswith("files/model/") for f in files)
    metrics = json.loads(store.read_file(trained.ref.key, "metrics.json"))["validation"]
    assert metrics["pairwise_accuracy"] == metrics["baselines"]["minilm_logreg"]
    probe = Probe.from_json(store.read_file(trained.ref.key, "probe.json"))
    assert probe.feature == "layer_mean" and len(probe.weights) == 384

    records = [make_record(uri="t", fmt="t", row=i, system=None, messages=[
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]) for i, (q, a) in enumerate([
            ("What is the capital of France?", "Paris."),
            ("What is the capital of France?", "The capital of France is Paris, its largest city, on the Seine."),
            ("Name a prime number.", "7 is a prime number: its only divisors are 1 and itself.")])]
    conversations = store.publish_table("conv", "ingest", records_to_table(records))
    table = store.read_table("conv")
    ids = table.column("id").to_pylist()
    features = encode_features(load_model(None, "cpu"), table_texts(table), 2)
    embeddings = store.publish_table("emb", "embed", embeddings_table(ids, features))

    def scores(params, trained, **inputs):
        result = run_stage(SCORE_STAGE, params, {"conversations": conversations, "iqs_model": trained.ref, **inputs},
                           store)
        return np.array([r["iqs_score"] for r in store.read_table(result.ref.key).to_pylist()])

    read = scores(params, trained, embeddings=embeddings)
    np.testing.assert_allclose(read, probe.scores(features.layer_mean), atol=1e-6)
    np.testing.assert_allclose(scores(params, trained), read, atol=1e-5)  # alone, it encodes the texts itself
    # a probe on the sentence vector reads the embedding column
    sentence = ProbeConfig(revisions=[str(DEMO_REVISIONS)], valid_fraction=0.25, probe_feature="embedding")
    trained_on_sentences = run_stage(TRAIN_STAGE, sentence, {}, store)
    assert trained_on_sentences.ref.key != trained.ref.key
    on_sentences = Probe.from_json(store.read_file(trained_on_sentences.ref.key, "probe.json"))
    np.testing.assert_allclose(scores(sentence, trained_on_sentences, embeddings=embeddings),
                               on_sentences.scores(features.embedding), atol=1e-6)

    short = store.publish_table("emb-short", "embed", embeddings_table(
        ids, Features(features.embedding[:, :8], features.layer_mean[:, :8])))
    with pytest.raises(BadInputError, match="layer_mean has 8 dimensions"):
        scores(params, trained, embeddings=short)
    before = store.publish_table("emb-v1", "embed", embeddings_table(ids, features).select(["id", "embedding"]))
    assert EMBEDDING_SCHEMA.names == ["id", "embedding", "layer_mean"]
    with pytest.raises(BadInputError, match="no 'layer_mean' column"):
        scores(params, trained, embeddings=before)
    with pytest.raises(BadInputError, match="no COMET checkpoint"):
        run_stage(SCORE_STAGE, CometConfig(**params.model_dump(exclude={"scorer"})),
                  {"conversations": conversations, "iqs_model": trained.ref}, store)


def test_training_batches_grouped_by_length_or_random():
    from torch.utils.data import DataLoader

    from tasks.iqs.metric import batching

    rows = [{"src": "x" * n, "score": 0.0} for n in range(1, 801)]
    grouped = list(DataLoader(rows, **batching(rows, 8, True), collate_fn=lambda b: [len(r["src"]) for r in b]))
    random = list(DataLoader(rows, **batching(rows, 8, False), collate_fn=lambda b: [len(r["src"]) for r in b]))
    for batches in (grouped, random):
        assert sorted(n for b in batches for n in b) == list(range(1, 801))  # every row once an epoch
    spread = [max(b) - min(b) for b in grouped], [max(b) - min(b) for b in random]
    assert max(spread[0]) < 50 < sum(spread[1]) / len(spread[1])
    pairs = [(rows[i], rows[i + 1]) for i in range(0, 800, 2)]
    assert len(list(DataLoader(pairs, **batching(pairs, 8, True), collate_fn=list))) == 50


def test_frozen_encoder_study_pools_ignore_padding():
    import numpy as np

    from benchmarks.iqs_heads import POOLINGS, pooled_features

    texts = ["Instruction: Name a color. Response: Blue.",
             "Instruction: Explain photosynthesis in two sentences. Response: Plants turn light, water and carbon "
             "dioxide into sugar and oxygen. It happens in the chloroplasts."]
    together = pooled_features(texts, batch_size=2, max_length=512)  # the short text is padded here
    alone = pooled_features(texts, batch_size=1, max_length=512)
    assert set(together) == set(POOLINGS)
    for name in POOLINGS:
        assert together[name].shape == (2, 384)
        np.testing.assert_allclose(together[name], alone[name], atol=1e-4, err_msg=name)


def _train_in_this_process(params_json: str, store_url: str, keys) -> None:
    from storage.stage import run_stage
    from storage.store import Store
    from tasks.scorers.comet import CometConfig
    from tasks.stages.iqs_train import STAGE as TRAIN_STAGE

    keys.put(run_stage(TRAIN_STAGE, CometConfig.model_validate_json(params_json), {}, Store(store_url)).ref.key)


@pytest.mark.slow
def test_training_works_inside_a_daemonic_process_like_a_dask_worker(tmp_path, shared_data):
    import multiprocessing

    from tasks.scorers.comet import CometConfig

    with (shared_data / "car" / "APE_score_train.csv").open() as fh:
        rows = list(csv.reader(fh))
    params = CometConfig(revisions=[str(write_csv(tmp_path / "train.csv", rows[:1 + 2 * 16]))],
                       validation_revisions=[str(write_csv(tmp_path / "valid.csv", [rows[0]] + rows[-8:]))],
                       epochs=1, nr_frozen_epochs=0, hidden_sizes=[16], train_batch_size=8, accumulate_grad_batches=1)
    context = multiprocessing.get_context("spawn")
    keys = context.Queue()
    # daemonic, as Dask's worker processes are: it may not start children (data loader workers would fail or hang)
    worker = context.Process(target=_train_in_this_process, daemon=True,
                             args=(params.model_dump_json(), str(tmp_path / "store"), keys))
    worker.start()
    worker.join(150)
    if worker.is_alive():
        worker.kill()
        worker.join()
    assert worker.exitcode == 0
    assert keys.get(timeout=10).startswith("iqs-train-")


# -- a published checkpoint (CaR's layout), read offline from a hub cache written here -------------------------
def cache_repo(hub: Path, name: str, commit: str) -> Path:
    """The local hub cache's layout for model repo `name` at `commit`, as a download leaves it."""
    repo = hub / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    return repo / "snapshots" / commit


@pytest.mark.slow
def test_a_published_checkpoint_is_imported_from_the_hub_cache_and_scores(tmp_path, shared_data, monkeypatch):
    """`iqs.model: hf:NAME` (CaR's hf:GyQAQ/Instruction-quality-scoring online) on a tiny InstructionMetric
    written in COMET's layout, its encoder named by a hub id, both in a hub cache read offline."""
    import numpy as np
    import pytorch_lightning
    import torch
    import yaml
    from huggingface_hub import constants
    from transformers import AutoTokenizer, BertConfig

    from tasks.iqs import hub as hub_module
    from tasks.iqs.comet_model import bundled_minilm
    from tasks.iqs.metric import InstructionMetric
    from tasks.iqs.score import score_texts

    hub = tmp_path / "hub"
    encoder = cache_repo(hub, "sftflow-tests/tiny-bert", "1" * 40)
    AutoTokenizer.from_pretrained(bundled_minilm()).save_pretrained(encoder)
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=512).save_pretrained(encoder)
    torch.manual_seed(0)
    model = InstructionMetric(encoder_model="BERT", pretrained_model=str(encoder), load_pretrained_weights=False,
                              local_files_only=True, hidden_sizes=[16]).eval()
    commit = "2" * 40
    published = cache_repo(hub, "sftflow-tests/tiny-iqs", commit)
    hparams = {**dict(model.hparams), "pretrained_model": "sftflow-tests/tiny-bert"}
    (published / "checkpoints").mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pytorch_lightning.__version__},
               published / "checkpoints" / "epoch=3-step=1016-val_kendall=0.600.ckpt")
    (published / "hparams.yaml").write_text(yaml.safe_dump(hparams))

    with (shared_data / "car" / "APE_score_valid.csv").open() as fh:
        valid = list(csv.reader(fh))
    pairs_csv = write_csv(tmp_path / "valid.csv", valid[:1 + 2 * 6])
    home = tmp_path / "home"
    offline = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    imported = run_cli("iqs", "train", "--set", "model=hf:sftflow-tests/tiny-iqs", "--validation", str(pairs_csv),
                       home=home, **offline)
    assert imported["metrics"]["pairs"] == 6 and "pairwise_accuracy" in imported["metrics"]
    from storage.store import Store

    store = Store(str(home / "store"))
    info = json.loads(store.read_file(imported["model"], "model.json"))
    assert info["imported"] == {"model": "hf:sftflow-tests/tiny-iqs", "revision": commit,
                                "checkpoint": "epoch=3-step=1016-val_kendall=0.600.ckpt"}

    pairs, _ = read_revisions(pairs_csv)
    texts = [pairs[0].raw, pairs[0].revised, pairs[1].revised]
    records = [make_conversation(text, row) for row, text in enumerate(texts)]
    from storage.schema import records_to_table

    store.publish_table("conversations-test", "ingest", records_to_table(records))
    # fp32: the published weights exactly (auto is bf16 on a CPU with bf16 units, ~2e-3 away)
    scored = run_cli("iqs", "score", "--model", imported["model"], "--set", "precision=fp32", "conversations-test",
                     home=home, **offline)
    got = [r["iqs_score"] for r in store.read_table(scored["key"]).to_pylist()]
    np.testing.assert_allclose(got, score_texts(model, texts).scores, atol=1e-5)

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_module.revision("hf:sftflow-tests/tiny-iqs") == commit
    # in a pipeline: iqs.train imports it, iqs reads the import; a new commit on the hub is a new key
    from flows.config import load_config
    from tasks.stages import get

    config = load_config(None, ["iqs.model=hf:sftflow-tests/tiny-iqs",
                                f"iqs.validation_revisions={json.dumps([str(pairs_csv)])}"])
    assert len(get("iqs.train").calls(config)) == 1 and "iqs_model" not in get("iqs").calls(config)[0].inputs
    key = get("iqs.train").key(config.iqs, {})
    assert key == imported["model"]
    shutil.copytree(published, published.parent / ("3" * 40))
    (published.parents[1] / "refs" / "main").write_text("3" * 40)
    assert get("iqs.train").key(config.iqs, {}) != key
    with pytest.raises(BadInputError, match="not in the local Hugging Face cache.*SFTFLOW_ONLINE=1.*hf:/path"):
        hub_module.snapshot(hub_module.CAR_CHECKPOINT)
    (published.parent / ("3" * 40) / "checkpoints" / "epoch=3-step=1016-val_kendall=0.600.ckpt").unlink()
    with pytest.raises(BadInputError, match="not a COMET checkpoint"):
        hub_module.checkpoint_files(hub_module.snapshot("hf:sftflow-tests/tiny-iqs"), "hf:sftflow-tests/tiny-iqs")


def make_conversation(text: str, row: int) -> dict:
    from storage.schema import make_record

    instruction, response = text.split(" Response: ", 1)
    return make_record(uri="test", fmt="test", row=row, system=None, meta={},
                       messages=[{"role": "user", "content": instruction.removeprefix("Instruction: ")},
                                 {"role": "assistant", "content": response}])


def test_a_long_batch_recomputes_its_activations_with_the_same_gradients():
    """The comet IQS's longest batches recompute their encoder activations in the backward pass instead of
    keeping their attention maps (most of the training's peak): the gradients are the very same, dropout
    included; a short batch keeps them."""
    import torch

    from tasks.iqs.comet_model import resolve_encoder
    from tasks.iqs.metric import InstructionMetric

    torch.manual_seed(0)
    model = InstructionMetric(encoder_model="BERT", pretrained_model=resolve_encoder(None), local_files_only=True,
                              nr_frozen_epochs=0.0, batch_size=4)
    model.train()
    batch = model.prepare_sample([{"src": " ".join(["word"] * 200) + str(i), "score": i / 4} for i in range(4)],
                                 stage="fit")
    short = model.prepare_sample([{"src": f"a short text {i}", "score": 0.5} for i in range(4)], stage="fit")

    def gradients(recompute_above):
        model.zero_grad()
        model.recompute_above, model.recomputed_batches = recompute_above, 0
        model.on_train_batch_start(batch, 0)
        torch.manual_seed(1)
        model.compute_loss(model(**batch[0]), batch[1]).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), model.recomputed_batches

    kept, recomputed = gradients(None), gradients(1e6)
    assert kept[1] == 0 and recomputed[1] == 1
    assert torch.equal(kept[0], recomputed[0]) and kept[0].abs().sum() > 0
    model.on_train_batch_start(short, 1)  # 4 rows of a few tokens: far below a megabyte of attention maps
    assert model.recomputed_batches == 1
