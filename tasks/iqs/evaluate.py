"""Honest evaluation on (raw, revised) pairs: the scorer beside the cheap baselines, raw and normalized.

In CaR's expert-revision data raw responses never contain a newline while two thirds of the revisions do,
so formatting alone ranks most pairs. Every number is therefore given twice: on the pairs as they are
and with every run of whitespace collapsed to one space ("normalized").
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tasks.iqs.revisions import RevisionPair, normalize_whitespace, split_response

ScoreFn = Callable[[list[str]], np.ndarray]
VARIANTS = {"raw": lambda s: s, "normalized": normalize_whitespace}


def pairwise_accuracy(raw_scores: np.ndarray, revised_scores: np.ndarray) -> float:
    """The share of pairs whose revision scores strictly above its raw text (ties count as misses)."""
    return float(np.mean(np.asarray(revised_scores) > np.asarray(raw_scores))) if len(raw_scores) else 0.0


def kendall_tau(scores: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(scores, labels).statistic)


def response_words(text: str) -> int:
    return len(split_response(text)[1].split()) - 1  # minus the "Response:" label


def length_scores(texts: Sequence[str]) -> np.ndarray:
    return np.array([response_words(t) for t in texts], np.float64)


def newline_then_length_scores(texts: Sequence[str]) -> np.ndarray:
    """A response with a newline beats one without; then the longer one wins."""
    return np.array([(1e6 if "\n" in split_response(t)[1] else 0.0) + response_words(t) for t in texts])


def evaluate_pairs(pairs: Sequence[RevisionPair], scorer: ScoreFn | None,
                   probe: ScoreFn | None = None, scorer_normalizes: bool = False) -> dict:
    """Pairwise accuracy and Kendall tau of `scorer`, and the baselines' pairwise accuracy, per variant.

    A scorer that normalizes whitespace itself (`scorer_normalizes`) sees the same text in both variants,
    so it is run once. `probe` is the MiniLM logistic-regression baseline (None leaves it out).
    """
    n = len(pairs)
    labels = np.array([0.0] * n + [1.0] * n)
    baselines: dict[str, ScoreFn] = {"response_length_words": length_scores,
                                     "newline_then_length": newline_then_length_scores}
    if probe is not None:
        baselines["minilm_logreg"] = probe
    result: dict = {"pairs": n}
    model_scores = None
    for variant, prep in VARIANTS.items():
        texts = [prep(p.raw) for p in pairs] + [prep(p.revised) for p in pairs]
        suffix = "" if variant == "raw" else "_normalized"
        if scorer is not None:
            if model_scores is None or not scorer_normalizes:
                model_scores = np.asarray(scorer(texts), np.float64)
            result[f"pairwise_accuracy{suffix}"] = pairwise_accuracy(model_scores[:n], model_scores[n:])
            result[f"kendall_tau{suffix}"] = kendall_tau(model_scores, labels)
        result["baselines" if variant == "raw" else "baselines_normalized"] = {
            name: pairwise_accuracy(s[:n], s[n:]) for name, fn in baselines.items()
            for s in [np.asarray(fn(texts), np.float64)]}
    return result


def comparison_rows(result: dict, scorer_name: str = "iqs") -> list[dict]:
    """Table rows: every scorer with its raw and normalized pairwise accuracy."""
    rows = []
    if "pairwise_accuracy" in result:
        rows.append({"scorer": scorer_name, "raw": result["pairwise_accuracy"],
                     "normalized": result["pairwise_accuracy_normalized"]})
    for name, value in result["baselines"].items():
        rows.append({"scorer": name, "raw": value, "normalized": result["baselines_normalized"][name]})
    return rows
