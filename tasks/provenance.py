"""Where a dataset of the store came from, read from the manifests upstream of it: the sources with their
checksums and licences, the rows through each stage, the scorer and its model, the selection rule, every
stage's key. Exports carry it (`sftflow.json`, the dataset card: tasks/destinations.py); a trained adapter's
model card lists the same lineage (tasks/train/outputs.py)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storage.store import DatasetMissing, Store, code_version

SELECT_STATS = ("rows", "clusters", "n1_used", "n2", "budget", "selected", "top_score_rows", "cluster_top_rows",
                "clusters_covered", "score_threshold", "note")


def upstream(store: Store, key: str, depth: int = 12) -> list[dict[str, Any]]:
    """The manifests of `key` and of every dataset it was built from (nearest first), each with its key."""
    seen, out, frontier = set(), [], [key]
    while frontier and depth > 0:
        depth -= 1
        nxt = []
        for k in frontier:
            if k in seen:
                continue
            seen.add(k)
            try:
                manifest = store.manifest(k)
            except DatasetMissing:
                continue
            out.append({**manifest, "key": k})
            nxt.extend(manifest.get("inputs", {}).values())
        frontier = nxt
    return out


def lineage(store: Store, key: str, depth: int = 12) -> list[dict[str, Any]]:
    """Every upstream stage of `key` (nearest first) with its parameters, read from the manifests."""
    return [{"key": m["key"], "stage": m["stage"], "rows": m.get("rows"), "params": m.get("params", {})}
            for m in upstream(store, key, depth)]


def provenance(store: Store, key: str, licenses: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What an export of dataset `key` says about its origin (see the module docstring); sections whose stage
    is not upstream of `key` are null (a dataset exported before selection has no selection). `licenses`:
    source path -> licence, over what the sources' manifests record."""
    manifests = upstream(store, key)
    first = {}
    for manifest in manifests:  # nearest first: the stage that made what this dataset was built from
        first.setdefault(manifest["stage"], manifest)
    sources = [source_entry(m, licenses or {}) for m in manifests if m["stage"] == "ingest.source"]
    licences = sorted({s["license"] for s in sources if s["license"]})
    return {
        "sftflow_version": code_version(),
        "dataset": {"key": key, "stage": manifests[0]["stage"], "rows": manifests[0]["rows"],
                    "created": manifests[0].get("created")},
        "sources": sources,
        "license": licences[0] if len(licences) == 1 else licences or None,
        "counts": counts(first, manifests[0]),
        "scoring": scoring(first.get("iqs")),
        "selection": selection(first.get("select")),
        "stages": [{"stage": m["stage"], "key": m["key"], "rows": m.get("rows"), "params": m.get("params", {})}
                   for m in manifests],
    }


def source_entry(manifest: dict[str, Any], licenses: Mapping[str, str]) -> dict[str, Any]:
    stats, params = manifest.get("stats", {}), manifest.get("params", {})
    uri = stats.get("uri", params.get("path"))
    return {"uri": uri, "format": stats.get("format"), "split": stats.get("split"),
            # the content the key was computed from: sha256 of a local file's bytes, an object store's identity
            # of a remote one, a hub commit; null in manifests written before sftflow recorded it
            "checksum": (manifest.get("fingerprint") or {}).get("content"),
            "license": licenses.get(uri) or params.get("license"),
            "read": stats.get("read"), "kept": stats.get("kept"),
            "quarantined": sum((stats.get("quarantined") or {}).values()), "duplicates": stats.get("duplicates"),
            "key": manifest["key"]}


def counts(first: dict[str, dict[str, Any]], dataset: dict[str, Any]) -> dict[str, Any]:
    """Rows through each stage: read = quarantined + exact duplicates + ingested; ingested - removed by dedup =
    deduplicated; then selected."""
    ingest, dedup, select = (first.get(s, {}).get("stats", {}) for s in ("ingest", "dedup", "select"))
    return {"read": ingest.get("read"), "quarantined": sum((ingest.get("quarantined") or {}).values()) if ingest
            else None, "duplicates": ingest.get("duplicates"), "ingested": ingest.get("kept"),
            "dedup_removed": dedup.get("removed"), "deduplicated": dedup.get("kept"),
            "selected": select.get("selected"), "dataset": dataset["rows"]}


def scoring(iqs: dict[str, Any] | None) -> dict[str, Any] | None:
    if iqs is None:
        return None
    stats = iqs.get("stats", {})
    return {"scorer": stats.get("scorer"), "model": stats.get("model"),
            "model_key": iqs.get("inputs", {}).get("iqs_model"), "key": iqs["key"]}


def selection(select: dict[str, Any] | None) -> dict[str, Any] | None:
    if select is None:
        return None
    stats = select.get("stats", {})
    return {"rule": stats.get("rule"), "params": select.get("params", {}),
            "summary": {name: stats.get(name) for name in SELECT_STATS}, "key": select["key"]}


def card(facts: dict[str, Any], title: str, use: str) -> str:
    """A Hugging Face dataset card (README.md) for an export: YAML metadata, how to load it (`use`, markdown),
    and the provenance `facts` (`provenance` plus the export's own `exported` entry) as tables."""
    licence, exported, counted = facts["license"], facts["exported"], facts["counts"]
    lines = ["---", *([f"license: {licence if isinstance(licence, str) else 'other'}"] if licence else []),
             "tags: [sftflow, sft, conversational]", "task_categories: [text-generation]", "---", "",
             f"# {title}", "",
             f"{exported['rows']:,} conversations exported as `{exported['format']}` by sftflow "
             f"{facts['sftflow_version']} from the store dataset `{facts['dataset']['key']}` (stage "
             f"`{facts['dataset']['stage']}`). Every fact below is also in `sftflow.json`.", "", "## Use", "", use, "",
             "## Rows through the pipeline", "", "| step | rows |", "|---|---:|"]
    lines += [f"| {label} | {n:,} |" for label, n in count_rows(counted)] + [f"| exported | {exported['rows']:,} |"]
    if exported["left_out"]:
        lines += ["", "## Left out (the format cannot hold them)", "", "| reason | rows | first ids |",
                  "|---|---:|---|"]
        lines += [f"| {reason} | {n['count']} | {', '.join(f'`{i}`' for i in n['first_ids'])} |"
                  for reason, n in exported["left_out"].items()]
    lines += ["", "## Sources", "", "| source | format | sheet / split | read | kept | checksum | licence |",
              "|---|---|---|---:|---:|---|---|"]
    lines += [f"| `{s['uri']}` | {s['format']} | {_cell(s['split'])} | {_cell(s['read'])} | {_cell(s['kept'])} | "
              f"{_cell(s['checksum'])} | {_cell(s['license'])} |" for s in facts["sources"]]
    if facts["scoring"]:
        s = facts["scoring"]
        lines += ["", "## Scoring", "", f"Scorer `{s['scorer']}`, model `{s['model']}`"
                  + (f" (store key `{s['model_key']}`)" if s["model_key"] not in (None, s["model"]) else "")
                  + f"; scores `{s['key']}`."]
    if facts["selection"]:
        s = facts["selection"]
        lines += ["", "## Selection", "", f"{s['rule']}; parameters `{json.dumps(s['params'])}` "
                  f"(`{s['key']}`).", "", *(f"- {k}: {v}" for k, v in s["summary"].items() if v is not None)]
    lines += ["", "## Stages (store keys)", "", "| stage | key | rows |", "|---|---|---:|"]
    lines += [f"| {s['stage']} | `{s['key']}` | {_cell(s['rows'])} |" for s in facts["stages"]]
    return "\n".join(lines) + "\n"


COUNT_LABELS = (("read", "read from the sources"), ("quarantined", "quarantined"),
                ("duplicates", "exact duplicates"), ("ingested", "ingested"), ("dedup_removed", "removed by dedup"),
                ("deduplicated", "after dedup"), ("selected", "selected"))


def count_rows(counted: dict[str, Any]) -> list[tuple[str, int]]:
    """(label, rows) of the steps a dataset went through; dedup's removals with their reasons."""
    rows = []
    for name, label in COUNT_LABELS:
        value = counted.get(name)
        if isinstance(value, dict):  # removed by dedup, per reason
            reasons = ", ".join(f"{reason} {n}" for reason, n in value.items() if n)
            label, value = f"{label} ({reasons})" if reasons else label, sum(value.values())
        if value is not None:
            rows.append((label, value))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
