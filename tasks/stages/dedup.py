"""`dedup`: near-duplicates, semantic duplicates and benchmark contamination removed with reasons, answer groups
flagged (tasks/dedup/). It refines the conversations: iqs, cluster and select read its output (embed, which it
reads, keeps the ingested rows). Every removed row is in the `-removed` companion with `reason`, `kept_id`
(the row it duplicates, or the eval row it overlaps) and `similarity`."""
from __future__ import annotations

from typing import Any

from storage.stage import Call, Requirement, Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.dedup import DedupConfig, eval_fingerprint, run_dedup


def plan(config: Any) -> list[Call]:
    return [Call(config.dedup)] if config.dedup.enabled else []


def reads(params: DedupConfig) -> set[str]:
    """The embeddings only when the semantic rule is on; scores when a recipe makes them before dedup (the sft
    recipe does not: there the row of a group that stays is the longest answer)."""
    return {"scored", *(("embeddings",) if params.semantic.enabled else ())}


def build(ctx: StageContext, conversations: DatasetRef, embeddings: DatasetRef | None = None,
          scored: DatasetRef | None = None) -> StageOutput:
    store = ctx.store
    advance = ctx.progress(1, f"dedup over {conversations.rows:,} rows")
    out = run_dedup(store.read_table(conversations.key),
                    ctx.params,
                    store.read_table(embeddings.key, columns=["id", "embedding"]) if embeddings is not None else None,
                    store.read_table(scored.key, columns=["id", "iqs_score"]) if scored is not None else None)
    advance(1)
    removed = out.stats["removed"]
    ctx.log.info("dedup: %d of %d rows kept; removed %s; %d answer groups", out.stats["kept"], out.stats["rows"],
                 ", ".join(f"{reason} {n}" for reason, n in removed.items()), out.stats["answer_groups"])
    return StageOutput(table=out.table, companions=out.companions, stats=out.stats, files=out.files,
                       report=out.report)


STAGE = Stage("dedup", "1", build, params=DedupConfig, section="dedup", output="conversations", plan=plan, reads=reads,
              fingerprint=lambda params: eval_fingerprint(params.decontaminate),
              requires=(Requirement("faiss", "pip install 'sftflow[cpu]' (faiss-cpu) or 'sftflow[gpu]'"),),
              description="near-duplicates, semantic duplicates and contamination removed; answer groups flagged")
