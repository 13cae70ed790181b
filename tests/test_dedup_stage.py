"""The dedup stage in the pipeline's wiring, and select taking at most one row of an answer group."""
from __future__ import annotations

import pyarrow as pa

from flows.config import load_config
from flows.plan import pipeline_plan
from storage.stage import run_stage
from storage.store import Store
from tasks import scorers
from tasks.stages import get
from tests.test_dedup import PEPPERMINT, PEPPERMINT_QUESTIONS, table_of


def wiring(tmp_path, *overrides):
    config = load_config(None, [f"store={tmp_path / 'store'}", "ingest.sources=[]", *overrides])
    plan = pipeline_plan(config, Store(str(tmp_path / "store")))
    return {s.label: {name: v.label for name, v in s.inputs.items()} for s in plan.steps}


def test_dedup_refines_what_scoring_clustering_and_selection_read(tmp_path):
    steps = wiring(tmp_path)
    assert steps["embed"] == {"conversations": "ingest"}  # dedup reads the embeddings: embed reads the ingest
    assert steps["dedup"] == {"conversations": "ingest", "embeddings": "embed"}
    assert steps["iqs"]["conversations"] == steps["select"]["conversations"] == "dedup"
    assert steps["cluster"] == {"embeddings": "embed", "conversations": "dedup"}
    no_semantic = wiring(tmp_path, "dedup.semantic.enabled=false")
    assert no_semantic["dedup"] == {"conversations": "ingest"}  # the near-duplicate rule needs no embeddings
    off = wiring(tmp_path, "dedup.enabled=false")
    assert "dedup" not in off and off["select"]["conversations"] == "ingest"


def test_a_selection_never_holds_two_answers_of_one_group(store):
    """MedicationQA's four peppermint questions with one 161-word answer: dedup groups them, select takes one."""
    rows = [(q, PEPPERMINT) for q in PEPPERMINT_QUESTIONS] + [
        (f"What is drug number {i} used for?", f"Drug {i} treats condition {i} in adults; take it with water.")
        for i in range(8)]
    conversations = store.publish_table("conv", "ingest", table_of(rows))
    dedup = run_stage(get("dedup"), load_config(None, ["dedup.semantic.enabled=false"]).dedup,
                      {"conversations": conversations}, store)
    assert dedup.stats["answer_groups"] == 1 and dedup.ref.rows == 12
    assert sum(dedup.stats["removed"].values()) == 0
    ids = store.read_table(dedup.ref.key).column("id").to_pylist()
    clusters = store.publish_table("clus", "cluster", pa.table({
        "id": ids, "cluster": pa.array([0] * 6 + [1] * 6, pa.int32()), "distance": pa.array([0.1] * 12, pa.float32()),
        "pc1": pa.array([0.0] * 12, pa.float32()), "pc2": pa.array([0.0] * 12, pa.float32())}))
    length = scorers.parse_config({"scorer": "length"})  # the long shared answer scores highest
    scored = run_stage(get("iqs"), length, {"conversations": dedup.ref}, store)
    selection = run_stage(get("select"), load_config(None, ["select.n1=6"]).select,
                          {"conversations": dedup.ref, "clusters": clusters, "scored": scored.ref}, store)
    answers = [m[-1]["content"] for m in store.read_table(selection.ref.key).column("messages").to_pylist()]
    assert answers.count(PEPPERMINT) == 1 and len(answers) == 6
    assert selection.stats["answer_group_rows_left_out"] == 3
    assert selection.stats["dedup_removed"] == {"near_duplicate": 0, "semantic_duplicate": 0, "contaminated": 0}
