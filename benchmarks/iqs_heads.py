"""IQS study on a FROZEN encoder: which pooling and which head, before any fine-tuning?

The bundled MiniLM encodes CaR's training rows and validation pairs once (whitespace normalized, truncated at
512 tokens as COMET does); then every pooling (last-layer mean, CLS, max, and the mean over all layers, a
uniform stand-in for COMET's layer mix) is tried with every head (logistic regression; an MLP regressor on the
0/1 targets with CaR's hidden sizes and Tanh; a small one). The measure is the pairwise accuracy on the
validation pairs, as `sftflow iqs eval` reports it. Compare with the fine-tuned COMET IQS in `benchmarks iqs
--train`: the gap is what unfreezing the encoder buys.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.iqs import CAR

POOLINGS = ("mean_last", "cls_last", "max_last", "mean_all_layers")
HEADS = {"logistic_regression": None, "mlp_2048_1024_tanh": (2048, 1024), "mlp_256_tanh": (256,)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)


def pooled_features(texts: list[str], batch_size: int, max_length: int) -> dict[str, np.ndarray]:
    """Every pooling of the bundled MiniLM's hidden states for `texts`, each (n, hidden) float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tasks.iqs.comet_model import bundled_minilm

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm())
    model = AutoModel.from_pretrained(bundled_minilm()).eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in POOLINGS}
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states  # embeddings + one per layer
            mask = enc["attention_mask"].unsqueeze(-1).float()

            last = hidden[-1]
            out["mean_last"].append(masked_mean(last, mask).numpy())
            out["cls_last"].append(last[:, 0].numpy())
            out["max_last"].append(last.masked_fill(mask == 0, -1e4).amax(1).numpy())
            out["mean_all_layers"].append(masked_mean(torch.stack(hidden[1:]).mean(0), mask).numpy())
    inverse = np.argsort(order)
    return {name: np.concatenate(parts)[inverse].astype(np.float32) for name, parts in out.items()}


def masked_mean(hidden, mask):
    return (hidden * mask).sum(1) / mask.sum(1)


def fit_head(name: str, x: np.ndarray, y: np.ndarray, seed: int = 42):
    """A scoring function for one head fitted on standardized features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    hidden = HEADS[name]
    if hidden is None:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000)).fit(x, y)
        return lambda v: model.decision_function(v)
    model = make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=hidden, activation="tanh", alpha=1e-3, learning_rate_init=1e-4, max_iter=200,
        early_stopping=True, validation_fraction=0.1, n_iter_no_change=10, random_state=seed)).fit(x, y)
    return lambda v: model.predict(v)


def run(args: argparse.Namespace) -> dict:
    from tasks.iqs.evaluate import pairwise_accuracy
    from tasks.iqs.revisions import load_pairs, normalize_whitespace, regression_rows

    train_pairs, _ = load_pairs([CAR / "APE_score_train.csv"])
    valid_pairs, _ = load_pairs([CAR / "APE_score_valid.csv"])
    train = regression_rows(train_pairs, normalize=True)
    texts = train.column("src").to_pylist()
    labels = train.column("score").to_numpy()
    valid = [normalize_whitespace(p.raw) for p in valid_pairs] + [normalize_whitespace(p.revised) for p in valid_pairs]
    n_train, n_valid = len(texts), len(valid_pairs)

    began = time.perf_counter()
    features = pooled_features(texts + valid, args.batch_size, args.max_length)
    encode_s = time.perf_counter() - began
    results = []
    for pooling, x in features.items():
        for head in HEADS:
            began = time.perf_counter()
            score = fit_head(head, x[:n_train], labels)
            s = score(x[n_train:])
            results.append({"name": f"{pooling} + {head}", "fit_s": round(time.perf_counter() - began, 1),
                            "pairwise_accuracy_normalized": round(pairwise_accuracy(s[:n_valid], s[n_valid:]), 4)})
    return {"benchmark": "iqs_heads", "train_rows": n_train, "valid_pairs": n_valid,
            "encode_s": round(encode_s, 1), "comparisons": results}
