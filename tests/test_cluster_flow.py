"""embed → cluster → select as Prefect tasks, with and without IQS scores (real MiniLM, real Prefect API)."""
import json

import pyarrow as pa
import pytest
from prefect import flow

from flows.execute import publish_table, run_plan
from flows.plan import Plan
from storage.schema import make_record, records_to_table
from storage.store import Store
from tasks.select import SUMMARY_FILE
from tasks.stages import cluster as cluster_stage
from tasks.stages import embed as embed_stage
from tasks.stages import select as select_stage
from tasks.stages.cluster import ClusterConfig
from tasks.stages.embed import EmbedConfig
from tasks.stages.select import SelectConfig


@flow(persist_result=True)
def diversity_flow(store: str, conversations_key: str, scored_key: str | None) -> dict:
    plan = Plan(Store(store))
    embeddings = plan.add(embed_stage.STAGE, EmbedConfig(device="cpu"), {"conversations": conversations_key})
    clusters = plan.add(cluster_stage.STAGE, ClusterConfig(k=4), {"embeddings": embeddings})
    inputs = {"conversations": conversations_key, "clusters": clusters}
    if scored_key:
        inputs["scored"] = scored_key
    plan.add(select_stage.STAGE, SelectConfig(n1=3, n2=1), inputs)
    return publish_table(run_plan(plan.compute_keys()), "diversity", "diversity-run")


@pytest.mark.slow
def test_flow_with_and_without_scores(prefect_api, store, shared_data):
    rows = json.loads((shared_data / "llama-factory" / "alpaca_en_demo.json").read_text())[:40]
    records = [make_record(messages=[{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r["input"]
                                                                                      else "")},
                                     {"role": "assistant", "content": r["output"]}],
                           system=None, uri="alpaca_en_demo.json", fmt="alpaca", row=i,
                           meta={"instruction": r["instruction"], "input": r["input"]}) for i, r in enumerate(rows)]
    conv = records_to_table(records)
    store.publish_table("conversations", "ingest", conv)
    ids = conv.column("id").to_pylist()
    store.publish_table("scored", "iqs", pa.table({"id": ids, "iqs_score": [len(r["output"]) / 1000 for r in rows],
                                                   "iqs_rank": list(range(1, 41))}))
    scored = diversity_flow(store.url, "conversations", "scored")
    assert [(r["stage"], r["status"]) for r in scored["stages"]] == [("embed", "ran"), ("cluster", "ran"),
                                                                     ("select", "ran")]
    selection_key = scored["stages"][-1]["key"]
    summary = json.loads(store.read_file(selection_key, SUMMARY_FILE))
    assert summary["scored"] and summary["clusters"] == 4 and summary["clusters_covered"] == 4
    assert summary["selected"] == 3 + summary["cluster_top_rows"]

    unscored = diversity_flow(store.url, "conversations", None)
    assert [r["status"] for r in unscored["stages"]] == ["cached", "cached", "ran"]
    assert unscored["stages"][-1]["key"] != selection_key
    assert unscored["stages"][-1]["rows_out"] == 4  # n1 rows round-robin (3) + the 4th cluster's top
