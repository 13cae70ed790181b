"""The picture a person checks after a run: how close new instructions came to earlier ones, and why tasks
were dropped (as the Self-Instruct paper shows ROUGE-L overlap with the most similar earlier instruction)."""
from __future__ import annotations

from collections import Counter

from tasks.figures import png, subplots
from tasks.self_instruct.generate import GenerationResult


def outcome_png(result: GenerationResult, threshold: float) -> bytes:

    fig, (left, right) = subplots(1, 2, figsize=(11, 4))
    kept = [o.max_rouge_l for o in result.kept if o.max_rouge_l is not None]
    duplicates = [o.max_rouge_l for o in result.dropped if o.reason == "duplicate"]
    bins = [i / 20 for i in range(21)]
    left.hist([kept, duplicates], bins=bins, stacked=True, label=["kept", "duplicate"], color=["#4c72b0", "#c44e52"])
    left.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold}")
    left.set(xlabel="ROUGE-L F1 with the most similar earlier instruction", ylabel="instructions")
    left.legend()
    counts = Counter({"kept": len(result.kept)}) + Counter(o.reason for o in result.dropped)
    names = sorted(counts, key=lambda name: -counts[name])
    right.barh(names, [counts[n] for n in names], color=["#4c72b0" if n == "kept" else "#8c8c8c" for n in names])
    right.invert_yaxis()
    right.set(xlabel="generated tasks", title=f"{result.requests} requests")
    fig.tight_layout()
    return png(fig)
