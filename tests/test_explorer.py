"""The selection explorer: its data (points, excerpts, lineage), and the page in headless Chromium: it renders every
point with no network request, its filters (from the URL fragment) narrow the map and the table."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import make_record
from tasks.errors import BadInputError
from tasks.explorer import ANSWER_CHARS, INSTRUCTION_CHARS, explorer_data, explorer_html
from tasks.select import CLUSTER_TOP, TOP_SCORE, select
from tests.browser import render
from tests.test_select import car_rows, tables

ROWS, CLUSTERS = 150, 12
SHEET_FILE = "data/medicationqa_demo.xlsx"


def explorer_inputs(shared_data, scored: bool = True):
    """CaR's published rows, every fifth one given an xlsx sheet as its source, on a 2-D map of 12 clusters."""
    rows, records = car_rows(shared_data)
    records = [make_record(messages=r["messages"], system=None, uri=SHEET_FILE, fmt="medicationqa", row=i + 1,
                           split="DrugQA") if i % 5 == 0 else r for i, r in enumerate(records[:ROWS])]
    labels = [int(r["label"]) % CLUSTERS for r in rows[:ROWS]]
    conv, clus, scores = tables(records, labels, [r["score"] for r in rows[:ROWS]] if scored else None)
    angle, noise = np.asarray(labels) * 2 * np.pi / CLUSTERS, np.random.default_rng(0).normal(size=(2, ROWS))
    clus = clus.set_column(3, "pc1", pa.array(3 * np.cos(angle) + noise[0], pa.float32()))
    clus = clus.set_column(4, "pc2", pa.array(3 * np.sin(angle) + noise[1], pa.float32()))
    selection, _ = select(conv, clus, scores, n1=15 if scored else 0, n2=1)
    return conv, clus, scores, selection


def test_data_has_every_point_the_selection_and_its_lineage(shared_data):
    conv, clus, scores, selection = explorer_inputs(shared_data)
    data = explorer_data(clus.take(np.arange(ROWS)[::-1]), selection, conv, scores)  # any row order
    points, chosen = data["points"], data["selected"]
    assert len(points["x"]) == ROWS and len(chosen["point"]) == selection.num_rows
    assert [points["id"][i] for i in chosen["point"]] == selection.column("id").to_pylist()  # selection order
    reasons = selection.column("selection_reason").to_pylist()
    assert [data["reasons"][points["reason"][i]] for i in chosen["point"]] == reasons
    assert points["reason"].count(-1) == ROWS - selection.num_rows
    assert reasons.count(TOP_SCORE) == 15 and CLUSTER_TOP in reasons
    # the first user turn and the answer's start, whitespace folded and cut
    turns = {r["id"]: [" ".join(m["content"].split()) for m in r["messages"]] for r in conv.to_pylist()}
    for kind, turn, chars in (("instruction", 0, INSTRUCTION_CHARS), ("answer", 1, ANSWER_CHARS)):
        cut = 0
        for point_id, text in zip(points["id"], points[kind]):
            full = turns[point_id][turn]
            if len(full) <= chars:
                assert text == full
            else:
                cut += 1
                assert text.endswith("…") and len(text) <= chars + 1 and full.startswith(text[:-1])
        assert cut, f"no {kind} long enough to be cut"
    sheet_rows = [k for k, uri in enumerate(chosen["uri"]) if uri == SHEET_FILE]
    assert sheet_rows and all(chosen["split"][k] == "DrugQA" for k in sheet_rows)
    assert chosen["row"] == selection.column("source").combine_chunks().field("row").to_pylist()
    assert data["scored"] and data["score_range"][0] < data["score_range"][1]

    conv, clus, _, selection = explorer_inputs(shared_data, scored=False)
    unscored = explorer_data(clus, selection, conv)
    assert not unscored["scored"] and unscored["score_range"] is None and set(unscored["points"]["score"]) == {None}


def test_rows_of_another_run_are_bad_input(shared_data):
    conv, clus, scores, selection = explorer_inputs(shared_data)
    with pytest.raises(BadInputError, match="not in the conversations"):
        explorer_data(clus, selection, conv.slice(1), scores)
    with pytest.raises(BadInputError, match="not in the clusters table"):
        explorer_data(clus.filter(pa.array([i != selection.column("id")[0].as_py()
                                            for i in clus.column("id").to_pylist()])), selection, conv, scores)


@pytest.mark.slow
def test_page_renders_offline_with_every_point_and_filters(shared_data, tmp_path, chromium):
    conv, clus, scores, selection = explorer_inputs(shared_data)
    page = tmp_path / "explorer.html"
    page.write_text(explorer_html(clus, selection, conv, scores, title="select-test"))
    data = explorer_data(clus, selection, conv, scores)
    points = data["points"]

    def shown(fragment: str = "", name: str = "page"):
        rendered = render(page.as_uri() + fragment, tmp_path, name, offline=True)
        assert rendered.page_requests == [], f"the page asked the network for {rendered.page_requests}"
        assert 'data-rendered="true"' in rendered.dom, rendered.text[:500]
        counted = int(rendered.dom.split('<b id="shown-count">')[1].split("<")[0])
        drawn = rendered.dom.count('class="point"')  # one SVG path per marker plotly drew
        assert counted == drawn, (counted, drawn)
        return rendered, drawn, int(rendered.dom.split('data-rows="')[1].split('"')[0])

    everything, drawn, table_rows = shown()
    assert drawn == ROWS and table_rows == selection.num_rows
    assert "sftflow selection explorer: select-test" in everything.text
    assert f"{ROWS} rows in {CLUSTERS} clusters, {selection.num_rows} selected" in everything.text
    # lineage: the sheet and its row, the JSON file's name
    assert "medicationqa_demo.xlsx DrugQA" in everything.text and "CaR_selected_result.json" in everything.text
    assert everything.screenshot.stat().st_size > 30_000

    _, drawn, table_rows = shown("#rows=top_score", "top-score")
    assert drawn == table_rows == 15
    cluster = points["cluster"][data["selected"]["point"][0]]
    _, drawn, table_rows = shown(f"#cluster={cluster}", "one-cluster")
    assert drawn == points["cluster"].count(cluster)
    assert table_rows == sum(points["cluster"][i] == cluster for i in data["selected"]["point"])
    lo, hi = np.quantile(points["score"], [0.25, 0.75]).round(4)
    _, drawn, _ = shown(f"#score={lo},{hi}", "score-range")
    assert drawn == sum(lo <= s <= hi for s in points["score"])


@pytest.mark.slow
def test_a_page_that_reaches_out_is_caught(tmp_path, chromium):
    """The no-network check above can fail: a page loading a CDN script and an image shows both requests."""
    page = tmp_path / "cdn.html"
    page.write_text('<script src="https://cdn.example.org/plotly.min.js"></script><img src="http://example.org/a.png">')
    requests = render(page.as_uri(), tmp_path, "cdn", offline=True, budget_ms=2000).page_requests
    assert sorted(requests) == ["http://example.org/a.png", "https://cdn.example.org/plotly.min.js"]
