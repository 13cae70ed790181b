"""The ingest counts as a line and as the markdown table of the stage reports."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def summary(stats: Mapping[str, Any]) -> str:
    quarantined = sum(stats["quarantined"].values())
    reasons = ", ".join(f"{r} {n}" for r, n in stats["quarantined"].items())
    repaired = stats.get("repairs", {}).get("conversations")
    return (f"read {stats['read']}, kept {stats['kept']}, quarantined {quarantined}"
            f"{f' ({reasons})' if reasons else ''}, duplicates {stats['duplicates']}"
            f"{f', repaired {repaired}' if repaired else ''}")


def source_report(sources: list[Mapping[str, Any]]) -> str:
    lines = ["| source | format | split | read | kept | quarantined | duplicates | repaired |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sources:
        quarantined = ", ".join(f"{r}: {n}" for r, n in s["quarantined"].items()) or "0"
        repairs = s.get("repairs") or {}
        repaired = ", ".join(f"{r}: {n}" for r, n in repairs.items() if r != "conversations")
        repaired = f"{repairs['conversations']} ({repaired})" if repaired else "0"
        lines.append(f"| {s['uri']} | {s['format']} | {s.get('split') or ''} | {s['read']} | {s['kept']} | "
                     f"{quarantined} | {s['duplicates']} | {repaired} |")
    warnings = [f"{Path(s['uri']).name}: {w}" for s in sources for w in s.get("warnings") or []]
    return "\n".join(lines + ([""] + [f"**Warning:** {w}" for w in warnings] if warnings else []))


def merged_counts(per_source: list[Mapping[str, Any]], name: str) -> dict[str, int]:
    """A per-source count dict (quarantined, repairs, skipped_messages) summed over the sources."""
    total: Counter[str] = Counter()
    for s in per_source:
        total.update(s.get(name) or {})
    return dict(sorted(total.items()))
