"""The evaluation stages and the selection-ablation flow (issue 16) on the tiny models: the evaluate stage
against the loss core, the pool kept apart from every evaluation set, bad input before anything trains, and
the flow served from the store a second time and training only a selector added later."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from flows.ablation import Arm, ablation_plan, grid, run_ablation
from flows.plan import run_alone
from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.evaluate import loss
from tasks.evaluate.holdout import IN_EVAL_SET, SAME_USER_TURNS
from tasks.stages import get
from tasks.stages.base_model import BaseModelParams
from tasks.stages.eval_pool import PoolParams
from tasks.stages.evaluate import EvaluateParams


def records(pairs: list[tuple[str, str]], uri: str = "pool.json") -> pa.Table:
    return records_to_table([make_record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                         system=None, uri=uri, fmt="alpaca", row=i) for i, (q, a) in enumerate(pairs)])


def publish(store, key: str, stage: str, table: pa.Table, **stats):
    store.publish_table(key, stage, table, stats=stats)
    return store.ref(key)


def test_evaluate_stage_equals_the_loss_core_and_is_cached(store, tiny_confident_lm):
    from transformers import AutoTokenizer

    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    base = run_stage(get("base_model"), BaseModelParams(reference=str(tiny_confident_lm)), {}, store).ref
    eval_set = publish(store, "eval-set-test", "eval.set",
                       records([("What is the capital of France?", "Paris is the capital of France."),
                                ("Write a short poem about the sea.", "The sea is wide and blue and deep.")]))
    params = EvaluateParams(max_length=64, resamples=200)
    result = run_alone(get("evaluate"), params, {"eval_set": eval_set.key, "base_model": base.key}, store)
    assert result.status == "ran" and result.ref.rows == 2
    encoded = ConversationEncoder(AutoTokenizer.from_pretrained(tiny_confident_lm), get_template("chatml"),
                                  max_length=64).encode(store.read_table(eval_set.key))
    expected = loss.score_table(encoded.table, store.local_path(base.key, "files", "model"), source="test")
    got = loss.RowLosses.from_table(store.read_table(result.ref.key))
    assert got.ids == expected.ids and abs(got.mean_loss - expected.mean_loss) < 1e-9
    stats = result.stats
    assert stats["loss"]["low"] <= stats["loss"]["estimate"] <= stats["loss"]["high"]
    assert stats["model"] == base.key and stats["adapter"] is None
    again = run_alone(get("evaluate"), params.model_copy(update={"batch_size": 1}),
                      {"eval_set": eval_set.key, "base_model": base.key}, store)
    assert again.status == "cached" and again.ref.key == result.ref.key  # the batch size changes no number
    with pytest.raises(BadInputError, match="needs a model"):
        run_alone(get("evaluate"), params, {"eval_set": eval_set.key}, store)


def test_pool_loses_held_out_and_overlapping_rows_and_refuses_a_set_of_pool_rows(store):
    pairs = [(f"Question {i}?", f"Answer {i}.") for i in range(40)]
    pool = publish(store, "dedup-pool", "dedup", records(pairs))
    held = run_alone(get("eval.holdout"), get("eval.holdout").parse_params({"holdout_rows": 4}),
                     {"conversations": pool.key}, store)
    gold = publish(store, "eval-set-gold", "eval.set", records([("Question 30?", "A better answer.")], "gold.csv"),
                   name="gold")
    result = run_alone(get("eval.pool"), PoolParams(),
                       {"conversations": pool.key, "eval_set_000": held.ref.key, "eval_set_001": gold.key}, store)
    quarantine = store.read_table(store.manifest(result.ref.key)["companions"]["quarantine"])
    reasons = quarantine.column("reason").to_pylist()
    assert reasons.count(IN_EVAL_SET) == 4 and SAME_USER_TURNS in reasons
    assert result.ref.rows == 40 - quarantine.num_rows
    kept = set(store.read_table(result.ref.key).column("id").to_pylist())
    assert not kept & set(store.read_table(held.ref.key).column("id").to_pylist())

    copied = publish(store, "eval-set-copied", "eval.set", records(pairs[:3]), name="copied")
    with pytest.raises(BadInputError, match="also in the pool") as info:
        run_alone(get("eval.pool"), PoolParams(), {"conversations": pool.key, "eval_set_000": copied.key}, store)
    assert info.value.field == "id"


def test_bad_requests_fail_before_anything_runs(ablation_config):
    config = ablation_config()
    with pytest.raises(BadInputError, match="no selector 'best'"):
        ablation_plan(config, 4, ["random", "best"], 1)
    with pytest.raises(BadInputError, match="must include 'random'"):
        ablation_plan(config, 4, ["car", "longest"], 1)
    with pytest.raises(BadInputError, match="car, top_score need IQS scores") as info:
        ablation_plan(ablation_config(iqs={"scorer": "none"}), 4, ["car", "random", "top_score"], 1)
    assert info.value.field == "--selectors"
    ablation_plan(ablation_config(iqs={"scorer": "none"}), 4, ["random", "cluster_only", "longest"], 1)


def ran(result) -> set[str]:
    return {row["stage"] for row in result["stages"] if row["status"] == "ran"}


@pytest.mark.slow
def test_ablation_report_store_hits_and_an_added_selector(prefect_api, ablation_config):
    config = ablation_config()
    with pytest.raises(BadInputError, match="a budget of 500 rows"):
        run_ablation(config, 500, grid(["random", "longest"], 1))
    from storage.store import Store

    assert not [k for k in Store(config.store).keys() if k.startswith("train-")]  # nothing trained

    first = run_ablation(config, 8, grid(["car", "random", "longest"], 2))
    assert first["seeds"] == 2 and [arm["selector"] for arm in first["arms"]] == ["car", "random", "longest"]
    assert first["ok"] and {"train[car/0]", "train[random/1]", "evaluate[base model/extra]"} <= ran(first)
    store = Store(config.store)
    selections = [row for row in first["stages"] if row["stage"].startswith("select[")]
    assert [row["rows_out"] for row in selections] == [8] * 4  # car, random/0, random/1, longest
    report = json.loads(open(first["report"]["files"]["ablation.json"]).read())
    sets = {s["name"]: s for s in report["summary"]["eval_sets"]}
    assert set(sets) == {"heldout", "extra"}
    base_heldout = next(row["key"] for row in first["stages"] if row["stage"] == "evaluate[base model/heldout]")
    stats = store.manifest(base_heldout)["stats"]  # rows whose answer starts beyond max_length are left out
    assert sets["heldout"]["rows"] == stats["rows"] > 0 and stats["rows"] + stats["quarantined"] == 6
    models = {m["model"]: m for m in sets["extra"]["models"]}
    assert set(models) == {"base model", "car", "random", "longest"}
    assert len(models["car"]["per_seed"]) == 2 and models["car"]["vs_baseline"]["verdict"] in (
        "better", "worse", "within_noise")
    assert all(run["train_steps"] == 2 for run in report["runs"] if run["adapter"])
    # each chain's cost: its scorer's minutes (0 for random, which reads none) and its selection's
    assert all(run["selection_minutes"] is not None and run["scoring_minutes"] is not None
               for run in report["runs"] if run["adapter"])
    assert report["sentence"] in store.read_file(first["report"]["key"], "report.md").decode()

    again = run_ablation(config, 8, grid(["car", "random", "longest"], 2))
    assert again["ok"] and not ran(again) and again["report"]["key"] == first["report"]["key"]

    more = run_ablation(config, 8, grid(["car", "random", "longest", "cluster_only"], 2))
    assert ran(more) == {"select[cluster_only]", "format[cluster_only]", "train[cluster_only/0]",
                         "train[cluster_only/1]", *(f"evaluate[cluster_only/{s}/{e}]" for s in (0, 1)
                                                    for e in ("heldout", "extra")), "ablation.report"}


def test_the_deployment_form_holds_the_ablation_defaults():
    from deployments.definitions import DEPLOYMENTS, ablation_parameters
    from flows.ablation import DEFAULT_SELECTORS
    from flows.config import PipelineConfig, load_config

    spec = next(s for s in DEPLOYMENTS if s.name == "selection-ablation")
    assert spec.available() and spec.entrypoint == "flows/ablation.py:selection_ablation"
    form = ablation_parameters(load_config(None, ["train.max_steps=5", "train.batch_size=4"]))
    # a CPU-feasible version of the Alpaca run: 200 rows a selector, one epoch over each selection
    assert form["budget"] == 200 and form["selectors"] == list(DEFAULT_SELECTORS) and form["seeds"] == 3
    train = PipelineConfig.model_validate(form["config"]).train  # what Prefect sends back
    assert train.max_steps is None and train.epochs == 1 and train.batch_size == 4


def test_from_a_stage_forces_the_chains_after_it_and_not_the_base_model(ablation_config):
    plan = ablation_plan(ablation_config(), 8, ["random", "longest"], 2).plan
    forced = {step.label for step in plan.descendants("train")}
    assert forced == {"train[random/0]", "train[random/1]", "train[longest/0]", "train[longest/1]",
                      *(f"evaluate[{m}/{s}/{e}]" for m in ("random", "longest") for s in (0, 1)
                        for e in ("heldout", "extra")), "ablation.report"}
    pool = {step.label for step in plan.descendants("eval.pool")}
    assert "evaluate[base model/heldout]" not in pool and {"cluster", "select[longest]", "iqs[random/1]"} <= pool


def test_arms_name_scorers_and_learning_rates_and_bad_ones_fail_before_anything_runs(ablation_config):
    """`car:probe` is CaR's rule on the probe scorer, trained on the pipeline's revisions and planned as the
    pipeline plans that scorer; an arm at another learning rate shares its selection and is compared with
    random at that rate."""
    from flows.ablation import Arm
    from tests.conftest import ROOT

    revisions = str(ROOT / "demo" / "revisions_demo.jsonl")
    config = ablation_config(iqs={"scorer": "comet", "revisions": [revisions], "valid_fraction": 0.25})
    arms = [Arm(selector="car", seeds=2), Arm(selector="random", seeds=2), Arm(selector="car:probe", seeds=1),
            Arm(selector="car", seeds=1, learning_rate=6.7e-5), Arm(selector="random", seeds=1, learning_rate=6.7e-5)]
    plan = ablation_plan(config, 8, arms=arms).plan
    labels = [step.label for step in plan.steps]
    # each step is named by the arm runs that share it: the comet IQS by car at both rates, probe's by one seed
    assert {"iqs.train[car]", "iqs[car]", "iqs.train[car:probe/0]", "iqs[car:probe/0]", "select[car:probe/0]",
            "train[car:probe/0]", "train[car@lr=6.7e-05/0]", "evaluate[random@lr=6.7e-05/0/heldout]"} <= set(labels)
    assert labels.count("select[car]") == 1 and "format[car@lr=6.7e-05]" not in labels  # one selection, shared
    probe_training = next(s for s in plan.steps if s.label == "iqs.train[car:probe/0]")
    assert probe_training.params.scorer == "probe" and probe_training.params.revisions == [revisions]
    slow = next(s for s in plan.steps if s.label == "train[car@lr=6.7e-05/0]")
    assert slow.params.learning_rate == 6.7e-5 and slow.inputs["tokenized"].label == "format[car]"
    with pytest.raises(BadInputError, match="no scorer 'nosuch'"):
        ablation_plan(config, 8, ["car:nosuch", "random"], 1)
    with pytest.raises(BadInputError, match="uses no scores"):
        ablation_plan(config, 8, ["cluster_only:probe", "random"], 1)
    with pytest.raises(BadInputError, match="must be positive") as info:
        ablation_plan(config, 8, arms=[Arm(selector="car", seeds=1), Arm(selector="random", seeds=1),
                                               Arm(selector="car", seeds=1, learning_rate=-1e-4)])
    assert info.value.field == "--learning-rates"
    with pytest.raises(BadInputError, match="no random arm at learning rate 0.0001"):
        ablation_plan(config, 8, arms=[Arm(selector="car", seeds=1), Arm(selector="random", seeds=1),
                                               Arm(selector="car", seeds=1, learning_rate=1e-4)])


def test_a_run_resumed_without_counts_is_marked_in_the_training_table():
    from tasks.stages.ablation_report import since

    assert since({"counted_from_step": 60}) == " (since step 60)"
    assert since({"counted_from_step": None}) == "" and since({}) == ""


@pytest.mark.slow
def test_an_ablation_judges_each_arms_answers_against_randoms(prefect_api, ablation_config, small_verdicts,
                                                              tmp_path):
    """--prompts and --judge: every adapter and the base model answer the prompt set, each arm's answers are
    judged against random's at the same seed, and the report, its JSON and the flow's result hold the judged
    table, the judge's report card, the order of arms beside the loss order and side-by-side answers."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": q}) for q in (
        "Name three fruits.", "What is the capital of Italy?", "Explain rain briefly.", "Say hello politely.")))
    config = ablation_config(generate={"prompts": [str(prompts)], "max_new_tokens": 6},
                             judge={"judge": "reward", "verdicts": small_verdicts, "features": "style"})
    result = run_ablation(config, 8, [*grid(["longest", "random"], 2), Arm.parse("full", 1)])
    assert {"generate[longest/1/prompts]", "judge.train",
            "judge[longest/0/prompts]", "judge[longest/1/prompts]", "judge[longest/1/prompts vs full]",
            "judge[random/0/prompts vs full]"} <= ran(result)
    judged = result["report"]["judged"]  # against random, then against the arm trained on everything
    assert [(row["model"], row["baseline"], row["seeds"], row["prompts"]) for row in judged] == [
        ("longest", "random", 2, 4), ("full", "random", 1, 4), ("longest", "full", 2, 4), ("random", "full", 2, 4)]
    assert 0 <= judged[0]["win_rate"]["low"] <= judged[0]["win_rate"]["estimate"] <= judged[0]["win_rate"]["high"]
    report = json.loads(open(result["report"]["files"]["ablation.json"]).read())
    shown = report["judged"]["side_by_side"]  # longest, random and full on the same prompts
    assert report["judged"]["judge"]["card"] and len(shown["rows"]) == 4 and shown["others"] == ["full"]
    assert all(row["full"] is not None and "verdict vs full" in row for row in shown["rows"])  # joined by prompt
    assert report["judged"]["order"]["arms"] == ["full", "longest", "random"]
    markdown = open(result["report"]["files"]["report.md"]).read()
    assert "## Judged answers" in markdown and "side by side" in markdown and "judged.png" in markdown
    costs = report["judged"]["costs"]  # each judged arm run's answering and judging minutes, and peak memory
    assert [(c["model"], c["seed"]) for c in costs][:3] == [("longest", 0), ("longest", 1), ("full", 0)]
    assert [c["against"] for c in costs] == [row["baseline"] for row in judged for _ in range(row["seeds"])]
    assert all(c["generation_minutes"] is not None and c["judging_minutes"] is not None
               and c["generation_peak_mb"] > 100 for c in costs) and "## What answering and judging cost" in markdown
