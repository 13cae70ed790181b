"""The dedup report: the counts, a few duplicate groups side by side (the kept row and the rows removed for it,
or the evaluation row and the training rows that overlap it), and a histogram of the similarities."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from tasks.dedup.config import DedupConfig
from tasks.dedup.decide import ANSWER_GROUPS, CONTAMINATED, NEAR, REASONS, SEMANTIC, DedupResult
from tasks.figures import png, subplots

SHOWN_CHARS = 240
RULE_TITLES = {NEAR: "Near-duplicates (Jaccard of word shingles)", SEMANTIC: "Semantic duplicates (cosine)",
               CONTAMINATED: "Contaminated (share of the evaluation row's n-grams)"}


def _cell(prompt: str, answer: str) -> str:
    text = " ".join(f"**{label}:** {part}" for label, part in (("Q", prompt), ("A", answer)) if part)
    text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def duplicate_groups(result: DedupResult, reason: str, limit: int) -> list[tuple[int | None, list[int]]]:
    """Up to `limit` groups for one rule, largest first: (the kept row, or the evaluation row for
    contamination; the rows it took out)."""
    d = result.decisions
    rows = np.flatnonzero(d.reason == reason)
    targets: dict[str, list[int]] = defaultdict(list)
    for row in rows.tolist():
        targets[d.kept_id[row]].append(row)
    order = sorted(targets.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]
    ids = result.evals.ids if reason == CONTAMINATED else result.features.ids
    where = {i: n for n, i in enumerate(ids)}
    return [(where.get(key), members) for key, members in order]


def examples_markdown(result: DedupResult, limit: int) -> list[str]:
    f, d = result.features, result.decisions
    lines: list[str] = []
    for reason in REASONS:
        groups = duplicate_groups(result, reason, limit)
        if not groups:
            continue
        left = "evaluation row" if reason == CONTAMINATED else "kept"
        lines += ["", f"### {RULE_TITLES[reason]}", "", f"| {left} | removed | similarity |", "|---|---|---:|"]
        for target, members in groups:
            if reason == CONTAMINATED:
                e = result.evals
                head = _cell(e.prompts[target], e.answers[target]) + f" <br>`{e.sources[target]}`"
            else:
                head = _cell(f.prompts[target], f.answers[target])
            for n, row in enumerate(members):
                lines.append(f"| {head if n == 0 else '〃'} | {_cell(f.prompts[row], f.answers[row])} | "
                             f"{d.similarity[row]:.3f} |")
    groups = answer_group_members(result)[:limit]
    if groups:
        lines += ["", "### Answer groups (kept; select takes one row of each)", "", "| rows | prompts | answer |",
                  "|---:|---|---|"]
        for members in groups:
            prompts = " <br>".join(_cell(f.prompts[r], "")[:120] for r in members[:5])
            lines.append(f"| {len(members)} | {prompts} | {_cell('', f.answers[members[0]])} |")
    return lines


def answer_group_members(result: DedupResult) -> list[list[int]]:
    """The rows of each answer group, largest group first, the group's first row first."""
    groups: dict[str, list[int]] = defaultdict(list)
    for row, group in enumerate(result.answer_group):
        if group is not None:
            groups[group].append(row)
    head = {i: n for n, i in enumerate(result.features.ids)}
    return [sorted(rows, key=lambda r: r != head[g]) for g, rows in
            sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def report_markdown(result: DedupResult, examples: int = 5) -> str:
    """The stage report (the stage's PNG, similarity.png, follows it as a figure)."""
    s = result.stats
    removed = sum(s["removed"].values())
    verb = "flagged" if s["mode"] == "flag" else "removed"
    lines = ["# dedup", "", "| | rows |", "|---|---:|", f"| in | {s['rows']} |", f"| kept | {s['kept']} |"]
    lines += [f"| {verb}: {reason} | {s['removed'][reason]} |" for reason in REASONS]
    lines += [f"| answer groups (rows in them) | {s['answer_groups']} ({s['rows_in_answer_groups']}) |", "",
              f"in {s['rows']} = kept {s['kept']} + {verb} {removed}; which row of a group stays: "
              f"{s['priority']}, ties by id."]
    if s["mode"] == "flag":
        lines.append("Mode `flag`: every row stays in the output, with `reason`, `kept_id`, `similarity`.")
    lines += examples_markdown(result, examples)
    lines += ["", "The figure: the similarities each rule looked at, with its threshold."]
    return "\n".join(lines) + "\n"


def similarity_png(result: DedupResult, config: DedupConfig) -> bytes:
    """One panel per rule that ran: near-duplicate candidates' Jaccard, every row's cosine to its nearest
    neighbour, answer-group candidates' word-set Jaccard; the threshold as a dashed line."""

    thresholds = {NEAR: config.near.threshold, SEMANTIC: config.semantic.threshold,
                  ANSWER_GROUPS: config.answer_groups.threshold}
    panels = [(key, values) for key, values in result.similarities.items() if len(values)]
    labels: dict[str, Any] = {NEAR: "near-duplicate candidates: Jaccard of word shingles",
                              SEMANTIC: "every row: cosine to its nearest neighbour",
                              ANSWER_GROUPS: "answer-group candidates: Jaccard of answer words"}
    fig, axes = subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, (key, values) in zip(axes[0], panels):
        ax.hist(values, bins=np.linspace(min(0.0, float(np.min(values))), 1.0, 51), color="#1f77b4")
        ax.axvline(thresholds[key], color="#d62728", linestyle="--", label=f"threshold {thresholds[key]}")
        ax.set_yscale("log")
        ax.set(title=labels[key], xlabel="similarity", ylabel="pairs (log)" if key != SEMANTIC else "rows (log)")
        ax.legend(loc="upper left")
    if not panels:
        axes[0][0].text(0.5, 0.5, "no rule compared any pair", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return png(fig)
