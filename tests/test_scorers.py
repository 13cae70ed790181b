"""The scorers that need no training, on the iqs stage and on CaR's validation pairs."""
from __future__ import annotations

import numpy as np
import pytest

from flows.config import load_config
from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks import scorers
from tasks.iqs.evaluate import evaluate_pairs
from tasks.iqs.revisions import RevisionPair, texts_table
from tasks.scorers.base import ScorerInputs
from tasks.stages import get


def conversations(answers: list[str]):
    return records_to_table([make_record(messages=[{"role": "user", "content": f"Question {i}?"},
                                                   {"role": "assistant", "content": a}],
                                         system=None, uri="t", fmt="t", row=i) for i, a in enumerate(answers)])


def test_length_scores_the_answers_words(store):
    table = conversations(["one", "one two three", "one two"])
    ref = store.publish_table("conv", "ingest", table)
    result = run_stage(get("iqs"), scorers.parse_config({"scorer": "length"}), {"conversations": ref}, store)
    scored = {r["id"]: r for r in store.read_table(result.ref.key).to_pylist()}
    ids = table.column("id").to_pylist()
    assert [scored[i]["iqs_score"] for i in ids] == [1.0, 3.0, 2.0]
    assert [scored[i]["iqs_rank"] for i in ids] == [3, 1, 2]
    assert result.stats["scorer"] == "length" and result.stats["model"] == "answer length in words"
    chars = scorers.get("length").open(ScorerInputs(store, scorers.parse_config({"scorer": "length", "unit": "chars"})))
    assert chars.score(table).values.tolist() == [3.0, 13.0, 7.0]


def test_random_is_seeded_and_does_not_depend_on_the_other_rows(store):
    table = conversations([f"answer {i}" for i in range(200)])
    score = scorers.get("random").open(ScorerInputs(store, scorers.parse_config({"scorer": "random"}))).score
    values = score(table).values
    assert np.array_equal(score(table.slice(50, 10)).values, values[50:60])  # a row's score is its own
    other = scorers.get("random").open(ScorerInputs(store, scorers.parse_config({"scorer": "random", "seed": 1})))
    assert not np.array_equal(other.score(table).values, values)
    assert 0 <= values.min() and values.max() < 1 and 0.35 < values.mean() < 0.65


def test_untrained_scorers_join_the_pipeline_without_a_model():
    config = load_config(None, ["iqs.scorer=length"])
    [call] = get("iqs").calls(config)
    assert not any(get("iqs").wants(name, call.params) for name in ("iqs_model", "embeddings", "base_model"))
    assert get("iqs.train").calls(config) == []


def test_any_scorer_evaluates_on_revision_pairs():
    pairs = [RevisionPair("Instruction: a Response: short", "Instruction: a Response: a longer answer", 9, "x:1"),
             RevisionPair("Instruction: b Response: one two three", "Instruction: b Response: one", 9, "x:3")]
    scoring = scorers.get("length").open(ScorerInputs(None, scorers.parse_config({"scorer": "length"})))
    result = evaluate_pairs(pairs, lambda texts: scoring.score(texts_table(texts)).values)
    assert result["pairwise_accuracy"] == 0.5 and result["baselines"]["response_length_words"] == 0.5


@pytest.mark.parametrize("name", ["length", "random"])
def test_the_cli_choices_come_from_the_registry(name):
    from flows.cli import build_parser

    args = build_parser().parse_args(["iqs", "eval", "--scorer", name, "--pairs", "p.csv"])
    assert args.scorer == name


PAIRS = [("Instruction: Name a fruit. Response: Apple.",
          "Instruction: Name a fruit. Response: An apple is a fruit that grows on trees."),
         ("Instruction: Say hi. Input: politely Response: hi",
          "Instruction: Say hi. Input: politely Response: Hello, it is nice to meet you."),
         ("Instruction: Count to three. Response: one two three four five six",
          "Instruction: Count to three. Response: 1, 2, 3.")]


def eval_cli(tmp_path, capsys, *args: str) -> dict:
    import csv
    import json

    from flows.cli import main

    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["src", "score"])
        for raw, revised in PAIRS:
            writer.writerows([[raw, 0], [revised, 1]])
    capsys.readouterr()
    assert main(["iqs", "--store", str(tmp_path / "store"), "eval", "--pairs", str(path), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args", [["--scorer", "length"], ["--scorer", "random", "--set", "seed=3"],
                                  ["--scorer", "combine", "--set", "members=[{scorer: length}, {scorer: random}]"]])
def test_iqs_eval_runs_every_untrained_scorer_without_a_model(tmp_path, capsys, args):
    out = eval_cli(tmp_path, capsys, *args)
    assert out["pairs"] == 3 and out["scorer"] == args[1]
    assert {"pairwise_accuracy", "pairwise_accuracy_normalized", "kendall_tau"} <= set(out)
    if args[1] == "length":
        assert out["pairwise_accuracy"] == pytest.approx(2 / 3) and out["scorer_model"] == "answer length in words"


def test_iqs_eval_runs_ifd_on_a_local_model(tmp_path, capsys, tiny_lm):
    out = eval_cli(tmp_path, capsys, "--scorer", "ifd", "--set", f"iqs.model={tiny_lm}")
    assert out["scorer_model"] == str(tiny_lm) and 0 <= out["pairwise_accuracy"] <= 1
