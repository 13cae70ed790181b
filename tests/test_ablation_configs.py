"""An ablation is the ablation recipe planned once per arm and seed from the arm's own config, merged by key
(flows/ablation.py): the keys of the plans made before (tests/legacy_ablation_plan.py, the old planner frozen)
stay the same, and an arm kind is one selector module (`file:PATH`, tasks/selectors/file.py)."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from flows.ablation import Arm, ablation_plan, grid
from flows.plan import Plan, Step
from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.listed import NOT_IN_POOL, match_listed
from tests.conftest import ROOT
from tests.legacy_ablation_plan import legacy_plan

ARMS = [("car", 2, None), ("random", 2, None), ("top_score", 1, None), ("cluster_only", 2, None),
        ("longest", 2, None), ("car", 1, 6.7e-5), ("random", 1, 6.7e-5)]


def arms_of(spec: list[tuple[str, int, float | None]]) -> list[Arm]:
    return [Arm(selector=name, seeds=seeds, learning_rate=rate) for name, seeds, rate in spec]


def keys(plan: Plan) -> dict[str, str]:
    return {step.key: step.label for step in plan.steps}


@pytest.mark.parametrize("iqs", [{"scorer": "length"},
                                 {"scorer": "comet", "revisions": [str(ROOT / "demo" / "revisions_demo.jsonl")],
                                  "valid_fraction": 0.25}], ids=["length", "comet"])
def test_every_step_of_the_old_plan_keeps_its_key(ablation_config, iqs):
    """The same steps under the same keys, the report's included: the chains in a store are served from it."""
    config = ablation_config(iqs=iqs)
    spec = [*ARMS, ("car:probe", 2, None)] if iqs["scorer"] == "comet" else ARMS
    old, new = legacy_plan(config, 8, spec), ablation_plan(config, 8, arms=arms_of(spec)).plan
    assert keys(new).keys() == keys(old).keys()
    assert len(new.steps) == len(old.steps)  # no step twice
    renamed = {keys(old)[k]: label for k, label in keys(new).items() if keys(old)[k] != label}
    if iqs["scorer"] == "comet":
        assert renamed["iqs.train[probe]"] == "iqs.train[car:probe]"  # named by its arm, not its scorer
    assert renamed.get("select[top_score]") == "select[top_score/0]"  # one seed: its selection carries it


def test_steps_no_arm_reads_are_no_longer_planned(ablation_config):
    """The old plan scored every row with the pipeline's IQS even when no arm read the scores."""
    config = ablation_config()
    spec = [("random", 1, None), ("longest", 1, None)]
    old, new = keys(legacy_plan(config, 8, spec)), keys(ablation_plan(config, 8, arms=arms_of(spec)).plan)
    assert new.keys() <= old.keys()
    assert sorted(old[k] for k in old.keys() - new.keys()) == ["iqs"]


def test_explicit_arms_are_what_is_planned(ablation_config):
    arms = arms_of([("car", 1, None), ("random", 3, None)])
    plan = ablation_plan(ablation_config(), 8, arms=arms).plan
    trained = sorted(step.label for step in plan.steps if step.stage.name == "train")
    assert trained == ["train[car/0]", "train[random/0]", "train[random/1]", "train[random/2]"]
    assert grid(arms=arms) == arms and [a.label for a in grid(["car", "random"], 2, [1e-4])] == [
        "car@lr=0.0001", "random@lr=0.0001"]


def test_a_token_budget_arm_is_its_own_rule_beside_the_baseline(ablation_config):
    """`random@tokens=N`: random's samples under a token budget, counted with the base model's tokenizer; its
    steps are named apart from random's, and it is not the baseline: plain random is still required."""
    arms = [Arm.parse("car", 1), Arm.parse("random", 1), Arm.parse("random@tokens=900", 2)]
    ablation = ablation_plan(ablation_config(), 8, arms=arms)
    plan = ablation.plan
    matched = plan.named("select[random@tokens=900/1]", "select")[0]
    assert matched.params.tokens == 900 and matched.params.budget is None and matched.params.n2 == 0
    assert matched.params.counting.train_max_length == 64  # the config's train.max_length
    assert matched.inputs["base_model"].stage.name == "base_model"
    plain = plan.named("select[random/0]", "select")[0]
    assert "base_model" not in plain.inputs and plain.params.tokens is None
    assert plan.named("train[random@tokens=900/0]", "train") and arms[2].label == "random@tokens=900"
    with pytest.raises(BadInputError, match="no arm 'lots'"):
        ablation_plan(ablation_config(), 8, arms=[Arm.parse("random", 1), Arm.parse("random@tokens=lots", 1)])
    with pytest.raises(BadInputError, match="must include 'random'"):
        ablation_plan(ablation_config(), 8, arms=[Arm.parse("car", 1), Arm.parse("random@tokens=900", 1)])


def test_an_arm_matches_the_training_tokens_of_another_arms_selection(ablation_config):
    """`random@tokens=car`: random samples until they hold the tokens car's selection holds, counted alike; its
    select step reads car's, so its key follows car's selection."""
    arms = [Arm.parse("random@tokens=car", 2), Arm.parse("car", 1), Arm.parse("random", 1)]
    ablation = ablation_plan(ablation_config(), 8, arms=arms)
    plan = ablation.plan
    car = plan.named("select[car/0]", "select")[0]
    matched = [plan.named(f"select[random@tokens=car/{seed}]", "select")[0] for seed in (0, 1)]
    assert all(step.inputs["tokens_of"] is car and step.params.tokens_of == "car" for step in matched)
    assert matched[0].key != matched[1].key  # a new sample per seed
    results = run_without_prefect(plan.needed_by(matched))
    store = plan.store
    summary = store.manifest(results[matched[0]].key)["stats"]
    formatted = run_without_prefect(plan.needed_by([plan.named("format[car/0]", "format")[0]]))
    tokenized = store.read_table(formatted[plan.named("format[car/0]", "format")[0]].key)
    car_tokens = sum(min(len(ids), 64) for ids in tokenized.column("input_ids").to_pylist())  # train.max_length 64
    assert summary["token_budget"] == car_tokens and summary["tokens"] <= car_tokens
    assert summary["tokens"] > car_tokens - 64  # one more row would not fit: within a row of the budget
    assert summary["tokens_of"] == results[car].key
    with pytest.raises(BadInputError, match="has a token budget read from another arm"):
        ablation_plan(ablation_config(), 8, arms=[Arm.parse("random", 1), Arm.parse("car@tokens=random@tokens=car", 1),
                                                  Arm.parse("random@tokens=car", 1)])


def test_the_full_arm_trains_on_every_row_of_the_pool(ablation_config):
    """`full`: the whole pool (one row of each answer group), for CaR's claim that 1,000 rows beat all of them;
    the same training settings (the benchmark's one epoch is then an epoch of the pool)."""
    ablation = ablation_plan(ablation_config(), 8, arms=[Arm.parse("full", 1), Arm.parse("random", 1)])
    plan = ablation.plan
    everything = plan.named("select[full/0]", "select")[0]
    assert everything.params.every_row and everything.params.budget is None
    results = run_without_prefect(plan.needed_by([everything]))
    store = plan.store
    selection = store.read_table(results[everything].key)
    pool = store.read_table(results[ablation.pool].key)
    groups = pool.column("answer_group").to_pylist() if "answer_group" in pool.column_names else [None] * pool.num_rows
    one_each = sum(g is None for g in groups) + len({g for g in groups if g is not None})
    assert selection.num_rows == one_each and set(selection.column("selection_reason").to_pylist()) == {"every_row"}
    assert set(selection.column("id").to_pylist()) <= set(pool.column("id").to_pylist())
    with pytest.raises(BadInputError, match="whatever the budget"):
        ablation_plan(ablation_config(), 8, arms=[Arm.parse("full@tokens=100", 1), Arm.parse("random", 1)])


def run_without_prefect(plan: Plan) -> dict[Step, object]:
    """Every step in order, each found in the store or built (the flow's work, without Prefect)."""
    results: dict[Step, object] = {}
    for step in plan.steps:
        inputs = {name: results[v] if isinstance(v, Step) else plan.store.ref(v) for name, v in step.inputs.items()}
        results[step] = run_stage(step.stage, step.params, inputs, plan.store, key=step.key, shard=step.shard,
                                  fingerprint=step.fingerprint).ref
    return results


def listing(tmp_path, records: list[dict], name: str = "published.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return str(path)


def test_a_file_arm_takes_the_rows_a_published_selection_lists(ablation_config, shared_data, tmp_path):
    """file:PATH is one selector module: the rows it lists, matched to the pool by instruction and input (the
    answer breaks a tie), those matching nothing reported; its key follows the file's content."""
    demo = json.loads((shared_data / "llama-factory" / "alpaca_en_demo.json").read_text())
    config = ablation_config()
    listed = [demo[3], demo[10], {**demo[20], "output": "Another answer to the same question."}, demo[41],
              {"instruction": "A question no pool row asks?", "input": "", "output": "Yes."}]
    path = listing(tmp_path, listed)
    ablation = ablation_plan(config, 8, arms=[Arm(selector=f"file:{path}", seeds=2), Arm(selector="random", seeds=1)])
    plan = ablation.plan
    chosen = plan.named("select[file:published]", "select")[0]
    assert chosen.params.from_file == path and chosen.fingerprint["from_file"]
    trained = [s.label for s in plan.steps if s.stage.name == "train"]
    assert trained == ["train[file:published/0]", "train[file:published/1]", "train[random/0]"]
    results = run_without_prefect(plan.needed_by([chosen]))
    store = plan.store
    selection = store.read_table(results[chosen].key)
    stats = store.manifest(results[chosen].key)["stats"]
    held_out = set(store.read_table(results[plan.named("eval.holdout", "x")[0]].key).column("id").to_pylist())
    pool = store.read_table(results[ablation.pool].key)
    asked = {row["messages"][0]["content"]: row["id"] for row in pool.select(["id", "messages"]).to_pylist()}
    in_pool = [r for r in listed[:4] if (r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")) in asked]
    assert stats["listed"] == 5 and stats["matched"] == selection.num_rows == len(in_pool) >= 2
    assert stats["matched_same_answer"] == stats["matched"] - (listed[2] in in_pool)
    assert set(selection.column("selection_reason").to_pylist()) == {"listed"}
    assert not set(selection.column("id").to_pylist()) & held_out
    quarantine = store.read_table(store.manifest(results[chosen].key)["companions"]["quarantine"])
    assert quarantine.column("reason").to_pylist().count(NOT_IN_POOL) == 5 - len(in_pool)
    report = store.read_file(results[chosen].key, "report.md").decode()
    assert "| rows the file lists | 5 |" in report and f"| matched to a pool row | {len(in_pool)} |" in report

    again = listing(tmp_path, listed[:2])
    changed = ablation_plan(config, 8, arms=[Arm(selector=f"file:{again}", seeds=1),
                                             Arm(selector="random", seeds=1)]).plan
    assert changed.named("select[file:published/0]", "select")[0].key != chosen.key  # the content is in the key


def test_matching_prefers_the_listed_answer_and_takes_each_pool_row_once():
    def rows(pairs):
        from storage.schema import make_record, records_to_table

        return records_to_table([make_record(messages=[{"role": "user", "content": q},
                                                       {"role": "assistant", "content": a}], system=None,
                                             uri="x.json", fmt="alpaca", row=i) for i, (q, a) in enumerate(pairs)])

    pool = rows([("Q1", "first"), ("Q1", "second"), ("Q2", "only"), ("Q3", "three")])
    chosen, unmatched, counts = match_listed(pool, rows([(" Q1\r\n", "second "), ("Q1", "other"), ("Q1", "more"),
                                                         ("Q9", "none")]))
    assert chosen.tolist() == [1, 0]  # the listed answer first, then the first free row asking the same
    assert counts == {"listed": 4, "matched": 2, "matched_same_answer": 1, "matched_loosely": 0, "unmatched": 2}
    assert unmatched.column("reason").to_pylist() == ["listed_twice", NOT_IN_POOL]
    assert isinstance(unmatched, pa.Table)


def test_published_fastchat_files_match_through_alpacas_prompt_and_placeholder_inputs():
    """AlpaGasus' and Long Is More's files wrap the instruction in Alpaca's prompt with newlines collapsed, and
    spell "no input" as the older Alpaca release did; each still finds its pool row, counted as matched loosely."""
    from storage.schema import make_record, records_to_table
    from tasks.templates import ALPACA_INPUT, ALPACA_NO_INPUT

    def rows(pairs):
        return records_to_table([make_record(messages=[{"role": "user", "content": q},
                                                       {"role": "assistant", "content": a}], system=None,
                                             uri="x.json", fmt="alpaca", row=i) for i, (q, a) in enumerate(pairs)])

    pool = rows([("Sum these.\n\n1 and\n2", "3"), ("Write a song.", "La la."), ("Plan a trip.\n\n``", "Go."),
                 ("Name a colour.", "Red.")])
    listed = rows([(f"{ALPACA_INPUT} ### Instruction: Sum these. ### Input: 1 and 2", "3"),
                   (f"{ALPACA_INPUT} ### Instruction: Write a song. ### Input: `<noinput>`", "La  la."),
                   ("Plan a trip.\n\nNo input required.", "Go."),
                   (f"{ALPACA_NO_INPUT} ### Instruction: Name a colour.", "Blue."),
                   (f"{ALPACA_NO_INPUT} ### Instruction: Name a shape.", "Square.")])
    chosen, unmatched, counts = match_listed(pool, listed)
    assert chosen.tolist() == [0, 1, 2, 3]
    assert counts == {"listed": 5, "matched": 4, "matched_same_answer": 3, "matched_loosely": 4, "unmatched": 1}
    assert unmatched.column("reason").to_pylist() == [NOT_IN_POOL]


def test_bad_file_arms_fail_before_anything_runs(ablation_config, tmp_path):
    config = ablation_config()
    with pytest.raises(BadInputError, match="no selection file"):
        ablation_plan(config, 8, arms=[Arm(selector="file:/no/such.json", seeds=1), Arm(selector="random", seeds=1)])
    with pytest.raises(BadInputError, match="file:PATH"):
        ablation_plan(config, 8, ["file", "random"], 1)
