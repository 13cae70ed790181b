"""CaR's selection rule: the published Alpaca selection, budgets, ties, no scores, the report, bad input."""
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.explorer import EXPLORER_FILE
from tasks.select import CLUSTER_TOP, SUMMARY_FILE, TOP_SCORE, UNSCORED_NOTE, select
from tasks.stages import select as select_stage
from tasks.stages.select import SelectConfig, selection_line
from tasks.text import alpaca_user_content


def car_rows(shared_data):
    rows = json.loads((shared_data / "car" / "CaR_selected_result.json").read_text())
    records = [make_record(messages=[{"role": "user", "content": alpaca_user_content(r["instruction"], r["input"])},
                                     {"role": "assistant", "content": r["output"]}],
                           system=None, uri="CaR_selected_result.json", fmt="alpaca", row=i,
                           meta={"instruction": r["instruction"], "input": r["input"]})
               for i, r in enumerate(rows)]
    return rows, records


def tables(records, clusters, scores, distances=None):
    conv = records_to_table(records)
    ids = conv.column("id").to_pylist()
    n = len(ids)
    dist = np.zeros(n) if distances is None else np.asarray(distances)
    clus = pa.table({"id": ids, "cluster": pa.array(clusters, pa.int32()), "distance": pa.array(dist, pa.float32()),
                     "pc1": pa.array(np.arange(n), pa.float32()), "pc2": pa.array(np.arange(n) % 7, pa.float32())})
    scored = None
    if scores is not None:
        order = sorted(range(n), key=lambda i: (-scores[i], ids[i]))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(1, n + 1)
        scored = pa.table({"id": ids, "iqs_score": pa.array(scores, pa.float64()), "iqs_rank": rank})
    return conv, clus, scored


def test_car_published_selection_is_reproduced(shared_data):
    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records, [int(r["label"]) for r in rows], [r["score"] for r in rows])
    # shuffle the inputs: the rule must not depend on row order
    perm = np.random.default_rng(0).permutation(conv.num_rows)
    selection, summary = select(conv.take(perm), clus.take(perm[::-1]), scored, n1=1000, n2=1)
    assert selection.num_rows == 1013
    assert set(selection.column("id").to_pylist()) == set(conv.column("id").to_pylist())
    reasons = selection.column("selection_reason").to_pylist()
    assert reasons.count(TOP_SCORE) == 1000 and reasons.count(CLUSTER_TOP) == 13
    # CaR lists its 13 cluster additions after the top 1,000
    added = {r["id"] for r in selection.to_pylist() if r["selection_reason"] == CLUSTER_TOP}
    assert added == {rec["id"] for rec in records[1000:]}
    assert (summary["clusters"], summary["clusters_covered_by_top"], summary["cluster_top_rows"]) == (161, 148, 13)
    # output keeps every canonical column plus the selection columns, best score first
    assert selection.schema.names[:5] == ["id", "source", "system", "messages", "meta"]
    assert selection.column("iqs_rank").to_pylist()[:3] == [1, 2, 3]
    assert selection.column("cluster").to_pylist()[0] == int(rows[0]["label"])

    # rows of lower score in the clusters the cluster step fills change nothing
    extra = [make_record(messages=[{"role": "user", "content": f"filler {i}"}, {"role": "assistant", "content": "x"}],
                         system=None, uri="filler", fmt="alpaca", row=i) for i in range(13)]
    labels = [int(r["label"]) for r in rows]
    conv2, clus2, scored2 = tables(records + extra, labels + labels[1000:], [r["score"] for r in rows] + [0.1] * 13)
    selection2, _ = select(conv2, clus2, scored2, n1=1000, n2=1)
    assert set(selection2.column("id").to_pylist()) == set(conv.column("id").to_pylist())


def test_budget_ties_and_n2(shared_data):
    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records, [int(r["label"]) for r in rows], [r["score"] for r in rows])
    selection, summary = select(conv, clus, scored, n1=1000, n2=1, budget=500)
    assert selection.num_rows == 500 and summary["clusters_covered"] == 161
    assert summary["n1_used"] + summary["cluster_top_rows"] == 500
    # every row chosen by score outranks every row not chosen
    chosen = set(selection.column("id").to_pylist())
    top_scores = [s for s, r in zip(selection.column("iqs_score").to_pylist(),
                                    selection.column("selection_reason").to_pylist()) if r == TOP_SCORE]
    rest = [r["score"] for r, rec in zip(rows, records) if rec["id"] not in chosen]
    assert min(top_scores) >= max(rest)
    small, summary = select(conv, clus, scored, n1=1000, n2=1, budget=100)
    assert small.num_rows == 100 and set(small.column("selection_reason").to_pylist()) == {CLUSTER_TOP}
    # n2=2: each cluster's two best rows
    two, _ = select(conv, clus, scored, n1=0, n2=2)
    per_cluster = np.bincount(two.column("cluster").to_numpy())
    sizes = np.bincount(clus.column("cluster").to_numpy())
    assert (per_cluster == np.minimum(sizes, 2)).all()

    # ties are broken by id, whatever the input order
    tie_conv, tie_clus, tie_scored = tables(records[:20], [0] * 20, [1.0] * 20)
    a, _ = select(tie_conv, tie_clus, tie_scored, n1=5, n2=0)
    b, _ = select(tie_conv.take(np.arange(19, -1, -1)), tie_clus, tie_scored, n1=5, n2=0)
    assert a.column("id").to_pylist() == b.column("id").to_pylist() == sorted(tie_conv.column("id").to_pylist())[:5]


def test_without_scores_is_a_round_robin_diversity_sample(shared_data):
    rows, records = car_rows(shared_data)
    clusters = [i % 10 for i in range(60)]
    distances = np.linspace(1, 0, 60)  # later rows are nearer their centroid
    conv, clus, _ = tables(records[:60], clusters, None, distances)
    selection, summary = select(conv, clus, None, n1=0, n2=1)
    assert selection.num_rows == 10 and summary["note"] and not summary["scored"]
    assert sorted(selection.column("cluster").to_pylist()) == list(range(10))
    # nearest to the centroid: the last row of each cluster
    assert set(selection.column("id").to_pylist()) == set(conv.column("id").to_pylist()[50:])
    assert selection.column("iqs_score").null_count == 10
    sample, _ = select(conv, clus, None, n1=0, n2=1, budget=25)
    # 25 = 2 rounds over the 10 clusters, then the 5 clusters whose third row is nearest its centroid
    assert sample.num_rows == 25 and np.bincount(sample.column("cluster").to_numpy()).tolist() == [2] * 5 + [3] * 5


def test_stage_writes_report_and_plots(store, shared_data):
    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records, [int(r["label"]) for r in rows], [r["score"] for r in rows])
    refs = {name: store.publish_table(f"t-{name}", name, table) for name, table in
            (("conversations", conv), ("clusters", clus), ("scored", scored))}
    result = run_stage(select_stage.STAGE, SelectConfig(n1=1000, n2=1), refs, store)
    assert result.ref.rows == 1013 and "clusters covered by the top n1 | 148" in result.report
    for name in ("score_histogram.png", "cluster_map.png"):
        assert store.read_file(result.ref.key, name)[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(store.read_file(result.ref.key, SUMMARY_FILE))["cluster_top_rows"] == 13
    page = store.read_file(result.ref.key, EXPLORER_FILE).decode()
    assert page.count('"point":[') == 1 and "sftflow selection explorer" in page
    assert f"`sftflow select --explore {result.ref.key}` opens [explorer.html](file://" in result.report
    # without scores (iqs.scorer none) the input is optional and the report says so
    unscored = run_stage(select_stage.STAGE, SelectConfig(n1=0), {k: refs[k] for k in ("conversations", "clusters")},
                         store)
    assert unscored.ref.rows == 161 and "cluster-only diversity sample" in unscored.report


def test_bad_input(shared_data):
    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records[:10], list(range(10)), [0.5] * 10)
    with pytest.raises(BadInputError, match="iqs_score"):
        select(conv, clus, scored.slice(0, 9), n1=5)
    nan_scored = scored.set_column(1, "iqs_score", pa.array([0.5] * 9 + [float("nan")]))
    with pytest.raises(BadInputError, match="row 9.*iqs_score"):
        select(conv, clus, nan_scored, n1=5)
    with pytest.raises(BadInputError, match="no cluster"):
        select(conv, clus.slice(1), scored, n1=5)
    with pytest.raises(BadInputError, match="no conversations"):
        select(conv.slice(0, 0), clus, scored, n1=5)


def test_cli_runs_and_reports(store, shared_data):
    import subprocess
    import sys

    from tests.conftest import ROOT

    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records, [int(r["label"]) for r in rows], [r["score"] for r in rows])
    for name, table in (("conversations", conv), ("clusters", clus), ("scored", scored)):
        store.publish_table(name, name, table)

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "flows", "select", "--store", store.url, *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    ran = json.loads(cli("--conversations", "conversations", "--clusters", "clusters", "--scored", "scored",
                         "--set", "budget=300", "--json"))
    assert ran["selected"] == 300 and ran["clusters_covered"] == 161 and len(ran["cluster_table"]) == 161
    report = json.loads(cli("--report", "--json"))  # the newest selection
    assert report["key"] == ran["key"] and report["files"]["cluster_map.png"].endswith("cluster_map.png")
    text = cli("--report", ran["key"])
    assert "rows added by the cluster step" in text and "largest 20 of 161 clusters" in text
    # --explore: the page's path; no display here (DISPLAY unset), so nothing is opened and it says so
    explored = json.loads(cli("--explore", "--json"))
    assert explored["key"] == ran["key"] and not explored["opened"]
    assert explored["path"].endswith("/files/explorer.html") and os.path.getsize(explored["path"]) > 1_000_000
    assert cli("--explore", ran["key"], "--no-browser").splitlines() == [explored["path"], "open it in a browser"]
    not_a_selection = subprocess.run([sys.executable, "-m", "flows", "select", "--store", store.url, "--explore",
                                      "clusters"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert not_a_selection.returncode == 2 and "not a selection" in not_a_selection.stderr


def test_cli_without_what_to_do_is_bad_input(capsys):
    from flows.cli import main

    assert main(["select", "--clusters", "clusters-1", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["field"] == "--conversations" and "--report" in error["error"]


def test_a_token_budget_takes_rows_by_the_rule_until_their_tokens_fit(shared_data):
    """Weights of one per row give the row budget exactly; with each row's tokens, n1 is the largest whose
    selection (cluster tops included) holds at most the budget, and one more row by the rule would not fit."""
    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records, [int(r["label"]) for r in rows], [r["score"] for r in rows])
    by_rows, _ = select(conv, clus, scored, n1=1000, n2=1, budget=500)
    counted = []
    ones, summary = select(conv, clus, scored, n1=1000, n2=1, tokens=500,
                           count_tokens=lambda t: counted.append(t.num_rows) or np.ones(t.num_rows))
    assert ones.column("id").to_pylist() == by_rows.column("id").to_pylist() and summary["tokens"] == 500
    assert summary["token_budget"] == 500 and summary["budget"] is None

    words = {r["id"]: len(r["messages"][1]["content"].split()) for r in conv.to_pylist()}
    count = lambda t: np.array([words[i] for i in t.column("id").to_pylist()], np.float64)  # noqa: E731
    budget = 20_000
    chosen, summary = select(conv, clus, scored, n1=1000, n2=1, tokens=budget, count_tokens=count)
    held = sum(words[i] for i in chosen.column("id").to_pylist())
    assert summary["tokens"] == held <= budget
    assert summary["clusters_covered"] == 161  # the cluster tops come first
    order = scored.sort_by([("iqs_rank", "ascending")]).column("id").to_pylist()
    following = next(i for i in order if i not in set(chosen.column("id").to_pylist()))
    assert held + words[following] > budget  # the next row by score would not fit
    # the top rule (n2 0) on a token budget: a prefix of the order
    top, _ = select(conv, clus, scored, n1=1000, n2=0, tokens=budget, count_tokens=count)
    assert top.column("id").to_pylist() == order[:top.num_rows]
    assert sum(words[i] for i in order[:top.num_rows + 1]) > budget >= sum(words[i] for i in order[:top.num_rows])


def test_the_stage_counts_training_tokens_as_format_and_train_do(store, shared_data, tiny_lm):
    """select.tokens tokenizes with the base model and the format settings, cut at train.max_length: the
    selection's tokens are what training on it would see."""
    from tasks.stages.format import STAGE as FORMAT
    from tasks.stages.format import FormatConfig
    from tasks.token_budget import TokenCounting

    rows, records = car_rows(shared_data)
    conv, clus, scored = tables(records[:200], [int(r["label"]) % 5 for r in rows[:200]],
                                [r["score"] for r in rows[:200]])
    refs = {name: store.publish_table(f"t-{name}", name, table) for name, table in
            (("conversations", conv), ("clusters", clus), ("scored", scored))}
    with store.writer("base_model-tiny", "base_model", kind="model") as writer:
        writer.add_file("model", tiny_lm)
    refs["base_model"] = store.ref("base_model-tiny")
    counting = TokenCounting(template="chatml", max_length=256, train_max_length=128)
    result = run_stage(select_stage.STAGE, SelectConfig(n1=0, n2=1, tokens=3000, counting=counting), refs, store)
    summary = json.loads(store.read_file(result.ref.key, SUMMARY_FILE))
    assert summary["tokens"] <= 3000 and 10 < result.ref.rows < 200 and "| token budget | 3000 |" in result.report
    formatted = run_stage(FORMAT, FormatConfig(template="chatml", max_length=256, exports=[]),
                          {"selection": result.ref, "base_model": refs["base_model"]}, store)
    lengths = [min(len(x), 128) for x in store.read_table(formatted.ref.key).column("input_ids").to_pylist()]
    assert sum(lengths) == summary["tokens"]
    with pytest.raises(ValueError, match="a budget of its own"):
        SelectConfig(tokens=10, budget=5)


def test_the_log_line_says_what_the_rule_that_ran_took(shared_data):
    """CaR's rule reports its score and cluster rows; a file's list its matching; `full` every row: a file arm's
    line must not read as "0 by score"."""
    _, records = car_rows(shared_data)
    records = records[:40]
    conv, clus, scored = tables(records, [i // 10 for i in range(40)], [float(i) for i in range(40)])
    _, car = select(conv, clus, scored, n1=10, n2=1)
    assert selection_line(car) == ("13 of 40 rows (10 by score, 3 added by the cluster step; top n1 covers 1 of 4 "
                                   "clusters)")
    _, listed = select(conv, clus, None, listed=np.array([3, 5, 7]))
    listed.update(listed=5, matched=3, unmatched=2)
    assert selection_line(listed) == "3 of 40 rows (the file lists 5: 3 matched to the pool, 2 not)"
    assert listed["note"] is None  # not "a cluster-only diversity sample"
    _, everything = select(conv, clus, None, every_row=True)
    assert selection_line(everything) == "40 of 40 rows (every row: one of each answer group)"
    assert everything["note"] is None and select(conv, clus, None, n1=0, n2=1)[1]["note"] == UNSCORED_NOTE
