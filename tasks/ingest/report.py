"""The ingest counts as a line and as the markdown table of the stage reports."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def summary(stats: Mapping[str, Any]) -> str:
    quarantined = sum(stats["quarantined"].values())
    reasons = ", ".join(f"{r} {n}" for r, n in stats["quarantined"].items())
    return (f"read {stats['read']}, kept {stats['kept']}, quarantined {quarantined}"
            f"{f' ({reasons})' if reasons else ''}, duplicates {stats['duplicates']}")


def source_report(sources: list[Mapping[str, Any]]) -> str:
    lines = ["| source | format | split | read | kept | quarantined | duplicates |", "|---|---|---|---|---|---|---|"]
    for s in sources:
        quarantined = ", ".join(f"{r}: {n}" for r, n in s["quarantined"].items()) or "0"
        lines.append(f"| {s['uri']} | {s['format']} | {s.get('split') or ''} | {s['read']} | {s['kept']} | "
                     f"{quarantined} | {s['duplicates']} |")
    return "\n".join(lines)
