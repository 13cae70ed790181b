"""The stage contract over every registered stage, the pipeline's wiring, and a stage added in one new file."""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.config import PipelineConfig, load_config
from flows.plan import Plan, pipeline_plan
from storage.stage import Requirement, Stage, StageOutput
from tasks import scorers
from tasks.errors import BadInputError
from tasks.plugins import package_modules
from tasks.stages import get, registered

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "pipeline.yaml"


def demo_config(tmp_path, *overrides):
    return load_config(DEMO, [f"store={tmp_path / 'store'}", *overrides])


@pytest.fixture(scope="module", autouse=True)
def demo_data():
    if not (ROOT / "demo" / "data" / "alpaca_demo.json").exists():
        subprocess.run([sys.executable, "demo/build_data.py", "demo/data"], cwd=ROOT, check=True)


def test_every_stage_module_declares_one_stage_named_after_it():
    for module in package_modules("tasks.stages"):
        stage = module.STAGE
        assert isinstance(stage, Stage) and stage.name.replace(".", "_") == module.__name__.rsplit(".", 1)[1]
        assert [s for s in vars(module).values() if isinstance(s, Stage)] == [stage]


@pytest.mark.parametrize("name", sorted(registered()))
def test_declared_inputs_parameters_and_keys(name):
    stage = get(name)
    params = list(inspect.signature(stage.build).parameters)
    assert params[0] == "ctx" and [i.name for i in stage.inputs] == params[1:]
    for item in stage.inputs:
        assert stage.input(item.name) is item and (not item.many or stage.input(f"{item.name}_007") is item)
    defaults = getattr(PipelineConfig(), stage.section) if stage.section else None
    if defaults is None:
        return
    plain = stage.dump_params(defaults)
    assert json.loads(json.dumps(plain)) == plain  # what Prefect sends to a deployment run
    assert stage.parse_params(plain) == defaults
    inputs = {i.name: f"{i.name}-0123" for i in stage.inputs if not i.optional and not i.many}
    if stage.fingerprint is None:  # (a fingerprint reads files: covered in each stage's own tests)
        assert stage.key(defaults, inputs) == stage.key(stage.parse_params(plain), inputs)
        assert stage.key(defaults, inputs).startswith(stage.name.replace(".", "-") + "-")


def test_the_scoring_key_holds_only_what_scoring_reads():
    comet = scorers.parse_config({"scorer": "comet"})
    retrained = comet.model_copy(update={"layerwise_decay": 0.9, "epochs": 7})
    inputs = {"conversations": "c", "iqs_model": "m"}
    assert get("iqs").key(comet, inputs) == get("iqs").key(retrained, inputs)
    assert get("iqs.train").key(comet, {}) != get("iqs.train").key(retrained, {})
    assert get("iqs").key(comet, {**inputs, "iqs_model": "other"}) != get("iqs").key(comet, inputs)
    # a field of another scorer is an error, not a silent re-run of everything after it
    with pytest.raises(BadInputError, match="iqs.layerwise_decay"):
        load_config(None, ["iqs.scorer=probe", "iqs.layerwise_decay=0.9"])


def test_from_follows_the_data_dependencies(tmp_path):
    plan = pipeline_plan(demo_config(tmp_path), _store(tmp_path))
    labels = [s.label for s in plan.steps]
    assert labels == ["ingest[0]", "ingest[1]", "ingest[2]", "ingest", "embed", "dedup", "cluster", "iqs.train",
                      "iqs", "select", "base_model", "format", "train"]
    assert {s.label for s in plan.descendants("select")} == {"select", "format", "train"}  # not base_model
    # embed feeds dedup (semantic rule), so everything that reads the deduplicated rows
    assert {s.label for s in plan.descendants("embed")} == {"embed", "dedup", "cluster", "iqs", "select", "format",
                                                            "train"}
    assert {s.label for s in plan.descendants("ingest.source")} == set(labels) - {"iqs.train", "base_model"}
    assert [s.label for s in plan.until("cluster").steps] == labels[:7]
    no_dedup = pipeline_plan(demo_config(tmp_path, "dedup.enabled=false"), _store(tmp_path))
    assert "iqs" not in {s.label for s in no_dedup.descendants("embed")}  # comet reads texts, not vectors
    probe = pipeline_plan(demo_config(tmp_path, "iqs.scorer=probe", "dedup.enabled=false"), _store(tmp_path))
    assert "iqs" in {s.label for s in probe.descendants("embed")}  # the probe reads the embeddings
    unscored = pipeline_plan(demo_config(tmp_path, "iqs.scorer=none"), _store(tmp_path))
    assert "iqs" not in {s.stage.name for s in unscored.steps}
    select = next(s for s in unscored.steps if s.label == "select")
    assert set(select.inputs) == {"conversations", "clusters"}
    with pytest.raises(BadInputError, match=r"not a stage of this flow \(ingest.source, ingest, embed"):
        plan.descendants("bogus")


def _store(tmp_path):
    from storage.store import Store

    return Store(str(tmp_path / "store"))


def test_wiring_mistakes_are_bad_input_before_anything_runs(tmp_path):
    plan = Plan(_store(tmp_path))
    with pytest.raises(BadInputError, match="takes no input 'embedings'"):
        plan.add(get("cluster"), PipelineConfig().cluster, {"embedings": "x"})
    with pytest.raises(BadInputError, match="needs the input 'clusters'"):
        plan.add(get("select"), PipelineConfig().select, {"conversations": "x"})
    needy = Stage("needy", "1", lambda ctx: StageOutput(), params=dict,
                  requires=(Requirement("no_such_module_for_sftflow", "pip install no-such"),))
    with pytest.raises(BadInputError, match="needs the package 'no_such_module_for_sftflow': pip install no-such"):
        plan.add(needy, {})
    plan.add(get("cluster"), PipelineConfig().cluster, {"embeddings": "embed-missing"})
    with pytest.raises(BadInputError, match="'embed-missing', which is not a complete dataset"):
        plan.compute_keys()
    with pytest.raises(BadInputError, match="iqs.model.*not a complete dataset"):
        pipeline_plan(demo_config(tmp_path, "iqs.model=iqs-train-nothere"), _store(tmp_path))


def test_a_missing_source_is_bad_input_naming_file_and_field(tmp_path):
    config = load_config(None, [f"store={tmp_path / 'store'}", f"ingest.sources=[{tmp_path / 'gone.json'}]",
                                "iqs.scorer=none"])
    with pytest.raises(BadInputError, match="source not found") as caught:
        pipeline_plan(config, _store(tmp_path))
    assert caught.value.file == str(tmp_path / "gone.json") and caught.value.field == "ingest.sources"


def test_tasks_and_storage_never_import_flows():
    offenders = [str(p.relative_to(ROOT)) for folder in ("tasks", "storage") for p in (ROOT / folder).rglob("*.py")
                 if re.search(r"^\s*(from|import) flows\b", p.read_text(), re.M)]
    assert offenders == []


def run_cli(*args: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "flows", *args, "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_stage_added_in_one_file_runs_in_the_pipeline_and_alone(tmp_path):
    """tests/toy_stage.py is the only file that names the toy stage: the config section, the wiring, the run table,
    `sftflow stage --list` and `sftflow stage toy` all come from its declaration."""
    env = {**os.environ, "SFTFLOW_HOME": str(tmp_path / "home"), "SFTFLOW_PLUGINS": "tests.toy_stage",
           "PYTHONPATH": str(ROOT)}
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"ingest": {"sources": [str(ROOT / "demo" / "data" / "alpaca_demo.json")]},
                                      "toy": {"word": "a"}, "iqs": {"scorer": "none"}, "dedup": {"enabled": False}}))
    run = run_cli("run", str(config), "--until", "toy", env=env)
    assert [(r["stage"], r["status"]) for r in run["stages"]] == [("ingest[0]", "ran"), ("ingest", "ran"),
                                                                  ("toy", "ran")]
    toy, conversations = run["stages"][2], run["stages"][1]["key"]
    assert toy["rows_in"] == toy["rows_out"] == 30
    listed = {s["stage"]: s for s in run_cli("stage", "--list", env=env)["stages"]}
    assert listed["toy"]["inputs"] == ["conversations"] and listed["toy"]["parameters"] == ["word"]
    alone = run_cli("stage", "toy", "--input", f"conversations={conversations}", "--set", "word=a", env=env)
    assert (alone["status"], alone["key"]) == ("cached", toy["key"])  # the same key as in the pipeline
    other = run_cli("stage", "toy", "--input", f"conversations={conversations}", "--set", "toy.word=the", env=env)
    assert other["status"] == "ran" and other["key"] != toy["key"] and other["stats"]["rows"] == 30
    assert set(other) == {"stage", "status", "key", "rows_in", "rows_out", "seconds", "stats"}
    assert not (tmp_path / "home" / "work" / other["key"]).exists()  # its scratch folder went once published


def test_a_sharded_stage_runs_in_parts_gathered_under_its_own_name(tmp_path):
    plan = pipeline_plan(demo_config(tmp_path, "embed.shards=2", "iqs.shards=3"), _store(tmp_path))
    steps = {s.label: s for s in plan.steps}
    assert [s.shard for s in plan.steps if s.stage.name == "embed"] == [(0, 2), (1, 2), None]
    assert {n: v.label for n, v in steps["embed"].inputs.items()} == {"part_000": "embed[0/2]",
                                                                      "part_001": "embed[1/2]"}
    assert steps["dedup"].inputs["embeddings"] is steps["embed"]  # readers read the gathered output
    assert steps["iqs[2/3]"].inputs["conversations"] is steps["dedup"]
    assert len({s.key for s in plan.steps}) == len(plan.steps)  # every part has a key of its own
    assert {s.label for s in plan.descendants("embed")} >= {"embed[0/2]", "embed[1/2]", "embed", "cluster"}
    with pytest.raises(BadInputError, match="cannot run in parts"):
        Plan(_store(tmp_path)).add(get("select"), PipelineConfig().select, {"conversations": "c", "clusters": "k"},
                                   shard=(0, 2))


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```\n", text.index(after)) + 4
    return text[start:text.index("```", start)].strip()


def test_the_readme_drawing_is_the_demo_plan(tmp_path):
    from flows.runner import drawing

    assert readme_block("a test keeps this drawing equal to the plan") == drawing(
        pipeline_plan(demo_config(tmp_path), _store(tmp_path)))


def test_every_recipe_plans_the_same_steps_and_keys_as_before(tmp_path):
    """The recipes wire what the flows wired before them (flows/plan.py's refiner rule, flows/ablation.py's
    hand-made plan; compared key by key on 2026-12-06: equal but for a config whose dedup reads no embeddings,
    where embed now reads the ingested rows): the same steps, every step after what it reads, one key for a step
    the two flows share."""
    from flows.ablation import ablation_plan
    from flows.plan import plan_recipe
    from flows.recipes import IQS_TRAINING, RECIPES, SELF_INSTRUCT

    config = demo_config(tmp_path)
    sft = pipeline_plan(config, _store(tmp_path))
    ablation = ablation_plan(config, 8, ["car", "random", "longest", "cluster_only"], 2).plan
    for plan in (sft, ablation):
        seen = set()
        for step in plan.steps:
            assert all(up in seen for up in step.upstream), step.label
            seen.add(step)
    by_label = {s.label: s for s in sft.steps}
    assert by_label["select"].inputs["conversations"] is by_label["dedup"]  # dedup refines what select reads
    assert by_label["embed"].inputs["conversations"] is by_label["ingest"]  # embed comes before dedup
    shared = ["ingest[0]", "ingest[1]", "ingest[2]", "ingest", "embed", "dedup", "iqs.train", "iqs", "base_model"]
    in_ablation = {s.label.removesuffix("[car]"): s for s in ablation.steps}  # car alone reads the pipeline's IQS
    assert [in_ablation[label].key for label in shared] == [by_label[label].key for label in shared]
    assert set(in_ablation) == {*shared, "eval.holdout", "eval.pool", "cluster", "ablation.report",
                                "evaluate[base model/heldout]", "select", "format", "iqs[longest]",
                                "select[longest]", "format[longest]", "select[cluster_only]",
                                "format[cluster_only]",
                                *(f"{stage}[random/{seed}]" for stage in ("iqs", "select", "format")
                                  for seed in (0, 1)),
                                *(f"train[{m}/{seed}]" for m in ("car", "random", "longest", "cluster_only")
                                  for seed in (0, 1)),
                                *(f"evaluate[{m}/{seed}/heldout]" for m in ("car", "random", "longest", "cluster_only")
                                  for seed in (0, 1))}
    assert in_ablation["cluster"].inputs["conversations"] is in_ablation["eval.pool"]  # the pool's clusters
    iqs = plan_recipe(IQS_TRAINING, None, _store(tmp_path), params={"iqs.train": config.iqs})
    assert [s.key for s in iqs.steps] == [by_label["iqs.train"].key]
    assert set(RECIPES) == {"sft-pipeline", "selection-ablation", "iqs-training", "self-instruct"}
    assert SELF_INSTRUCT.stages() == ["self_instruct"]


def test_the_plan_json_lists_every_step_with_its_inputs_by_key(tmp_path):
    env = {**os.environ, "SFTFLOW_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    shown = run_cli("run", str(DEMO), "--plan", env=env)
    plan = pipeline_plan(demo_config(tmp_path, f"store={tmp_path / 'home' / 'store'}"),
                         _store(tmp_path / "home"))
    assert [(s["label"], s["key"], s["status"]) for s in shown["steps"]] == [(s.label, s.key, "to run")
                                                                            for s in plan.steps]
    select = next(s for s in shown["steps"] if s["label"] == "select")
    assert {name: source["from"] for name, source in select["inputs"].items()} == {
        "conversations": "dedup", "clusters": "cluster", "scored": "iqs"}


@pytest.mark.slow
def test_a_filter_placed_after_dedup_runs_and_changes_what_select_reads(tmp_path):
    """A plugin stage that writes `conversations` and names its place (`after="dedup"`, tests/toy_filter.py, the
    only file that names it) runs in the pipeline between dedup and every later reader of conversations."""
    env = {**os.environ, "SFTFLOW_HOME": str(tmp_path / "home"), "SFTFLOW_PLUGINS": "tests.toy_filter",
           "PYTHONPATH": str(ROOT)}
    args = ["run", str(DEMO), "--until", "select", "--set", "iqs.scorer=none"]
    plan = run_cli(*args, "--set", "toy_filter.min_words=12", "--plan", env=env)
    step = {s["label"]: s for s in plan["steps"]}
    assert step["toy_filter"]["inputs"]["conversations"]["from"] == "dedup"
    assert step["select"]["inputs"]["conversations"]["from"] == "toy_filter"
    assert step["cluster"]["inputs"]["conversations"]["from"] == "toy_filter"
    assert step["embed"]["inputs"]["conversations"]["from"] == "ingest"
    run = {r["stage"]: r for r in run_cli(*args, "--set", "toy_filter.min_words=12", env=env)["stages"]}
    kept = run["toy_filter"]["rows_out"]
    assert 0 < kept < run["dedup"]["rows_out"] and run["select"]["rows_in"] == kept  # select read the filtered rows


def test_the_recipe_table_in_the_concepts_page_is_the_recipes():
    import re

    from flows.recipes import RECIPES

    rows = dict(re.findall(r"^\| `([\w-]+)` \| (.+?) \|$", (ROOT / "docs" / "concepts.md").read_text(), re.M))
    for name, recipe in RECIPES.items():
        listed = re.sub(r"\([^)]*\)", "", rows[name].split("; then")[0]).replace(" ", "").split(",")
        assert listed == recipe.stages(), name
