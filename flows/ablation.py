"""The `selection-ablation` flow: is a model tuned on my selection better than one tuned on a random sample?

An ablation is the ablation recipe (flows/recipes.py) planned once per arm and seed, each from its own config:
`arm_runs` derives, from the ablation's config, one config per arm × seed (the arm's scorer as `iqs`, its rule
and budget as `select`, `train.seed` and the arm's learning rate in `train`), the one planner (`plan_recipe`)
plans each, and `Plan.merge` adds each plan's steps to one plan by key: what several arms make alike (ingest,
dedup, the pool and its clusters, a trained scorer, one selection shared by every seed) is one step by
construction. A selector (tasks/selectors/) is a scorer and a rule whose select parameters make exactly `budget`
rows; `car:probe` runs CaR's rule on the probe scorer. The base model, untrained, is evaluated once on every set.
One report compares every arm with random. The plan runs in two parts: first what the pool needs, so a budget
larger than the pool is an error before anything trains.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field

from flows.config import PipelineConfig
from flows.execute import Run, publish_table, run_plan
from flows.plan import Plan, Step, plan_recipe
from flows.recipes import ABLATION, ABLATION_BASE, ABLATION_POOL_SCORED, JUDGING, Recipe
from flows.runner import normalized, planned, run_flow
from storage.params import Section
from storage.store import Store
from tasks import judges, scorers, selectors
from tasks.errors import BadInputError
from tasks.evaluate.report import LEARNING_RATE_MARK
from tasks.selectors import BASELINE, PIPELINE_SCORER, Selector
from tasks.stages import get
from tasks.stages.ablation_report import CHART, REPORT_JSON, AblationReportParams, JudgedLabel, RunLabel
from tasks.stages.evaluate import set_labels
from tasks.stages.references import REFERENCE, has_references

BASE_MODEL = "base model"
FULL = "full"  # the arm that trains on every row: every other arm is also judged against it
DEFAULT_SEEDS = 3
DEFAULT_SELECTORS = ("car", "random", "top_score", "cluster_only", "longest")


class Arm(Section):
    """One selector under the rows budget (or a token budget of its own) trained at one learning rate (None:
    train.learning_rate), for `seeds` seeds."""

    selector: str = Field(description="a selector name, or NAME:SCORER (e.g. car:probe)")
    seeds: int = Field(DEFAULT_SEEDS, description="training seeds (and random samples)")
    learning_rate: float | None = Field(None, description="empty: train.learning_rate")
    tokens: int | None = Field(None, ge=1, description="a token budget instead of the rows budget (select.tokens)")
    tokens_of: str | None = Field(None, description="a token budget read from another arm's selection: as many "
                                                    "training tokens as it holds (its label, e.g. car)")

    @classmethod
    def parse(cls, spec: str, seeds: int, learning_rate: float | None = None) -> Arm:
        """An arm as its label names it: `car`, `car:probe`, `random@tokens=203240`, `random@tokens=car` (as many
        training tokens as car's selection holds)."""
        selector, _, budget = spec.partition("@tokens=")
        if budget.isdigit():
            return cls(selector=selector, seeds=seeds, learning_rate=learning_rate, tokens=int(budget))
        return cls(selector=selector, seeds=seeds, learning_rate=learning_rate, tokens_of=budget or None)

    @property
    def rule(self) -> str:
        """What makes its selection: the selector's name (`file:CaR_selected_result` for a file), and the token
        budget when it has one."""
        name = selectors.get(self.selector).name
        budget = self.tokens if self.tokens is not None else self.tokens_of
        return name if budget is None else f"{name}@tokens={budget}"

    @property
    def label(self) -> str:
        """The model's name in the report: its rule, and the learning rate when the arm names one."""
        return self.rule if self.learning_rate is None else f"{self.rule}{LEARNING_RATE_MARK}{self.learning_rate:g}"


def grid(selector_names: Sequence[str] | None = None, seeds: int = DEFAULT_SEEDS,
         learning_rates: Sequence[float] | None = None, arms: Sequence[Arm] | None = None) -> list[Arm]:
    """The arms of a request: `arms` when given, else every selector (all by default) at every learning rate (at
    train.learning_rate when none is given)."""
    if arms:
        return list(arms)
    names = list(selector_names or DEFAULT_SELECTORS)
    rates = list(learning_rates or [None])
    return [Arm.parse(name, seeds, rate) for rate in rates for name in names]


@dataclass(frozen=True)
class ArmRun:
    """One arm at one seed (or the base model): the config and recipe it is planned from, its name in the report."""

    model: str  # the arm's label, or BASE_MODEL
    seed: int | None
    config: Any
    recipe: Recipe
    arm: Arm | None = None

    @property
    def tag(self) -> str:
        return self.model if self.seed is None else f"{self.model}/{self.seed}"

    def label_of(self, step: Step) -> str:
        """The label of a step this run adds to the ablation: tagged with the run; the base model's run adds the
        shared part (ingest … the pool's clusters) under its recipe labels, and its own evaluations and answers."""
        return tagged(step.label, self.tag) if self.arm or step.stage.name in ("evaluate", "generate") else step.label


@dataclass
class AblationPlan:
    plan: Plan
    pool: Step
    report: Step
    budget: int


def default_budget(config: Any) -> int:
    """select.budget when set, else one pass over the selection: train.max_steps x batch x accumulation."""
    train = config.train
    if config.select.budget:
        return config.select.budget
    if train.max_steps:
        return train.max_steps * train.batch_size * train.grad_accumulation
    return config.select.n1


def check_request(config: Any, arms: Sequence[Arm], budget: int) -> dict[str, Selector]:
    """The selectors the arms name, or bad input before anything runs."""
    chosen = {arm.selector: selectors.get(arm.selector) for arm in arms}
    if not any(arm.rule == BASELINE for arm in arms):
        raise BadInputError(f"the selectors must include {BASELINE!r}: every other one is compared with it",
                            field="--selectors")
    labels = [arm.label for arm in arms]
    if len(set(labels)) != len(labels):
        raise BadInputError(f"a selector is named twice in {', '.join(labels)}", field="--selectors")
    for arm in arms:
        if arm.seeds < 1:
            raise BadInputError(f"{arm.seeds} seeds for {arm.label}: at least 1", field="--seeds")
        if arm.tokens_of is not None and arm.tokens_of not in labels:
            raise BadInputError(f"{arm.label}: no arm {arm.tokens_of!r} to match the tokens of (the arms are "
                                f"{', '.join(labels)})", field="--selectors")
        if arm.tokens_of is not None and next(a for a in arms if a.label == arm.tokens_of).tokens_of is not None:
            raise BadInputError(f"{arm.label}: {arm.tokens_of} has a token budget read from another arm itself",
                                field="--selectors")
        if (arm.tokens is not None or arm.tokens_of) and chosen[arm.selector].rule in ("file", "all"):
            raise BadInputError(f"{arm.label}: this arm takes the rows of a file or every row, whatever the budget",
                                field="--selectors")
        if arm.learning_rate is not None and not arm.learning_rate > 0:
            raise BadInputError(f"a learning rate of {arm.learning_rate} for {arm.selector}: it must be positive",
                                field="--learning-rates")
    rates = {arm.learning_rate for arm in arms}
    for rate in rates - {None}:  # every learning rate is compared with random at that rate
        if not any(a.learning_rate == rate and a.rule == BASELINE for a in arms):
            raise BadInputError(f"no {BASELINE} arm at learning rate {rate:g}: every arm is compared with "
                                f"{BASELINE} at its own learning rate", field="--learning-rates")
    if budget < 1:
        raise BadInputError(f"a budget of {budget} rows: at least 1", field="--budget")
    needs_iqs = [s.name for s in chosen.values() if s.scorer == PIPELINE_SCORER]
    if needs_iqs and config.iqs.scorer == scorers.NONE:
        raise BadInputError(f"selector(s) {', '.join(needs_iqs)} need IQS scores, and this config makes none "
                            "(iqs.scorer is none): set iqs.scorer (comet with iqs.revisions, probe, length, ...) "
                            "or leave them out", field="--selectors")
    return chosen


def scorer_config(config: Any, selector: Selector, seed: int) -> Any:
    """The `iqs` section of a selector's arm: the pipeline's own, none, or the selector's scorer (one that trains
    takes the pipeline's revision settings, what both declare; the random scorer a new sample per seed)."""
    if selector.scorer == PIPELINE_SCORER:
        return config.iqs
    if selector.scorer is None:
        return scorers.parse_config({"scorer": scorers.NONE})
    if scorers.get(selector.scorer).train is None:
        return scorers.parse_config({"scorer": selector.scorer, **({"seed": seed} if selector.per_seed else {})})
    member = type(scorers.parse_config({"scorer": selector.scorer}))
    shared = {k: v for k, v in config.iqs.model_dump().items() if k in member.model_fields and k not in ("scorer",
                                                                                                        "model")}
    return scorers.parse_config({**shared, "scorer": selector.scorer})


def arm_runs(config: Any, arms: Sequence[Arm], chosen: dict[str, Selector], budget: int) -> list[ArmRun]:
    """The base model, then every arm × seed as the config of one sft recipe: the arm's scorer as `iqs`, its rule
    under the budget as `select`, `train.seed` (and the arm's learning rate); every chain trains with the same
    format, adapter, steps and batch."""
    runs = [ArmRun(BASE_MODEL, None, config, ABLATION_BASE)]
    for arm in sorted(arms, key=lambda a: a.tokens_of is not None):  # after the arm whose tokens they match
        selector = chosen[arm.selector]
        for seed in range(arm.seeds):
            iqs = scorer_config(config, selector, seed)
            train = config.train.model_copy(update={
                "seed": seed, "eval_share": 0.0, "sample_prompts": [],
                **({"learning_rate": arm.learning_rate} if arm.learning_rate is not None else {})})
            rows = selector.select_params(budget, config.select.n2)
            if arm.tokens is not None or arm.tokens_of:
                rows = {**rows, "budget": None, "tokens": arm.tokens, "tokens_of": arm.tokens_of}
            select = type(config.select).model_validate(rows)
            own = config.model_copy(update={"iqs": iqs, "select": select, "train": train})
            # the pipeline's own scorer, and one that trains or reads embeddings, score every row as the pipeline
            # does (one dataset with its scores); one that needs nothing scores only the pool
            every_row = selector.scorer in (PIPELINE_SCORER, None) or bool(scorers.get(iqs.scorer).inputs(iqs))
            runs.append(ArmRun(arm.label, seed, own, ABLATION if every_row else ABLATION_POOL_SCORED, arm))
    return runs


def ablation_plan(config: Any, budget: int | None = None, selector_names: Sequence[str] = DEFAULT_SELECTORS,
                  seeds: int = DEFAULT_SEEDS, arms: Sequence[Arm] | None = None) -> AblationPlan:
    """The checked plan: unknown selectors or scorers, missing scores, bad wiring and missing files fail here.
    `arms` (selector x learning rate x seeds) replace `selector_names` x `seeds` when given."""
    budget = budget if budget is not None else default_budget(config)
    arms = grid(selector_names, seeds, arms=arms)
    chosen = check_request(config, arms, budget)
    store = Store(config.store)
    plan = Plan(store, memory_gb=config.resources.memory_gb)
    recipe_label: dict[Step, str] = {}  # a step an arm added → its label in the recipe
    made_for: dict[Step, list[ArmRun]] = defaultdict(list)  # → every arm run that makes it
    runs: list[RunLabel] = []
    evaluations: dict[str, Step] = {}
    answers: dict[tuple[str, str], Step] = {}  # (arm run's tag, prompt set) → its generate step
    selections: dict[str, list[Step]] = defaultdict(list)  # arm label → its select step per seed
    references: dict[str, Step] = {}  # prompt set → its reference answers
    every = arm_runs(config, arms, chosen, budget)
    for run in every:
        own = plan_recipe(run.recipe, run.config, store)
        if run.arm is not None and run.arm.tokens_of is not None:
            matched = selections[run.arm.tokens_of]
            match_tokens(own, matched[run.seed % len(matched)])
        evaluated = {name: own.named(f"evaluate[{name}]", "evaluate")[0] for name in set_labels(config)}
        # the arms answer; the base model's run plans the prompt sets, which every arm shares, under their own labels
        made = "generate" if run.arm is not None else "prompts"
        generated = {entry.label: own.named(f"{made}[{entry.label}]", made)[0] for entry in config.generate.prompts}
        # and the sets' reference answers (the held-out rows' own, AlpacaEval's), which every arm is judged against
        written = {} if run.arm is not None else {entry.label: own.named(f"references[{entry.label}]", "references")[0]
                                                  for entry in config.generate.prompts if has_references(entry)}
        before = set(plan.steps)
        merged = plan.merge(own.needed_by([*evaluated.values(), *generated.values(), *written.values()]),
                            label=run.label_of)
        references.update({prompt_set: merged[step] for prompt_set, step in written.items()})
        for step, into in merged.items():
            if run.arm is not None and into not in before:
                recipe_label[into] = step.label
            if into in recipe_label:
                made_for[into].append(run)
        if run.arm is not None:
            selections[run.arm.label].append(merged[own.named("select", "select")[0]])
        for set_name, step in evaluated.items():
            name = f"evaluation_{len(evaluations):03d}"
            evaluations[name] = merged[step]
            runs.append(RunLabel(input=name, model=run.model, seed=run.seed, eval_set=set_name))
        if run.arm is not None:
            answers.update({(run.tag, prompt_set): merged[step] for prompt_set, step in generated.items()})
    relabel(plan, recipe_label, made_for)
    judged = plan_judging(plan, config, store, every, answers, references, evaluations)
    report = plan.add(get("ablation.report"),
                      AblationReportParams(runs=runs, baseline=BASELINE, resamples=config.eval.resamples,
                                           confidence=config.eval.confidence, judged=judged or None), evaluations)
    return AblationPlan(plan.compute_keys(), plan.named("eval.pool", "eval.pool")[0], report, budget)


def match_tokens(own: Plan, source: Step) -> None:
    """An arm run's selection reads the selection whose training tokens are its budget (`NAME@tokens=ARM`): its
    key and every key after it follow that selection's."""
    following = own.descendants("select")
    own.named("select", "select")[0].inputs["tokens_of"] = source
    for step in following:
        step.key = ""
    own.compute_keys()


def plan_judging(plan: Plan, config: Any, store: Store, runs: list[ArmRun], answers: dict[tuple[str, str], Step],
                 references: dict[str, Step], evaluations: dict[str, Step]) -> list[JudgedLabel]:
    """Each arm's answers judged against the baseline arm's at the same learning rate and seed (a baseline with
    fewer seeds is reused in turn), on every prompt set; where the ablation trains on everything (`full`), every
    other arm's against full's too (CaR's claim); where a prompt set has reference answers (the held-out rows'
    own, AlpacaEval's GPT-4-turbo's: `references`), every arm's, random's too, against them. The judge's model
    (the reward judge's) is trained once. Adds the judge steps to `evaluations` (the report's inputs) and returns
    their labels."""
    if not answers:
        return []
    judges.get(config.judge.judge).check(config.judge)
    trained = plan.merge(plan_recipe(JUDGING, config, store))
    judge_model = next((step for step in trained.values() if step.stage.name == "judge.train"), None)
    judged = []

    def judge(run: ArmRun, prompt_set: str, other: Step, against: str | None) -> None:
        inputs = {"answers": answers[(run.tag, prompt_set)], "baseline": other,
                  **({"judge_model": judge_model} if judge_model is not None else {})}
        vs = "" if against is None else f" vs {against}"
        step = plan.add(get("judge"), config.judge, inputs, label=f"judge[{run.tag}/{prompt_set}{vs}]")
        name = f"evaluation_{len(evaluations):03d}"
        evaluations[name] = step
        judged.append(JudgedLabel(input=name, model=run.model, seed=run.seed, prompt_set=prompt_set, baseline=against))

    for reference in (BASELINE, FULL):
        against = defaultdict(list)  # learning rate → the reference's runs
        for run in runs:
            if run.arm is not None and run.arm.rule == reference:
                against[run.arm.learning_rate].append(run)
        for run in runs:
            if run.arm is None or run.arm.rule == reference or not against[run.arm.learning_rate]:
                continue
            found = against[run.arm.learning_rate]
            other = found[run.seed % len(found)]
            for entry in config.generate.prompts:
                judge(run, entry.label, answers[(other.tag, entry.label)], None if reference == BASELINE else reference)
    for prompt_set, written in references.items():
        for run in runs:
            if run.arm is not None:
                judge(run, prompt_set, written, REFERENCE)
    return judged


def tagged(label: str, tag: str) -> str:
    """`evaluate[heldout]` of arm run `car/0` → `evaluate[car/0/heldout]`; `train` → `train[car/0]`."""
    name, bracket, inner = label.partition("[")
    return f"{name}[{tag}/{inner}" if bracket else f"{label}[{tag}]"


def relabel(plan: Plan, recipe_label: dict[Step, str], made_for: dict[Step, list[ArmRun]]) -> None:
    """Name each arm's step by what the arm runs that make it share: `select[car]` for a selection every seed
    of car shares (at every learning rate), `select[random/0]` for one sample, `train[car@lr=6.7e-05/0]`; a step
    of several selectors (one IQS for car and top_score) keeps its recipe label, or lists them where two such
    steps would share it."""
    taken = [step.label for step in plan.steps if step not in recipe_label]
    for step, base in recipe_label.items():
        users = made_for[step]
        named = {run.arm.rule for run in users}
        rates = {run.arm.learning_rate for run in users}
        seeds = {run.seed for run in users}
        if len(named) == 1:
            tag = next(iter(named))
            if len(rates) == 1 and None not in rates:
                tag += f"{LEARNING_RATE_MARK}{next(iter(rates)):g}"
            if len(seeds) == 1:
                tag += f"/{next(iter(seeds))}"
            step.label = tagged(base, tag)
        else:
            step.label = base if base not in taken else tagged(base, ",".join(sorted(named)))
        taken.append(step.label)
    if len(set(taken)) != len(taken):
        raise AssertionError(f"two steps of the ablation share a label: {sorted(taken)}")


def check_budget(run: Run, budget: int) -> None:
    """The pool is known once eval.pool ran: a budget it cannot fill is bad input before anything trains."""
    pool = run.results["eval.pool"]
    if budget > pool.ref.rows:
        stats = pool.stats
        raise BadInputError(f"a budget of {budget} rows, but only {pool.ref.rows} are left to select from (the "
                            f"pool's {stats.get('rows_in')} rows minus the held-out and overlapping rows: "
                            f"{stats.get('removed')})", field="--budget")


def merged(first: Run, second: Run) -> Run:
    """The second run's table, with the steps the first run built shown as built (not as cached)."""
    rows = [next((r for r in first.rows if r.stage == row.stage and r.status == "ran"), row)
            if row.status == "cached" else row for row in second.rows]
    return Run(second.store, rows, second.results)


def _run_name() -> str:
    config = flow_run.parameters.get("config")
    name = config.name if isinstance(config, PipelineConfig) else (config or {}).get("name", "sftflow")
    return f"ablation-{name}-{date.today().isoformat()}"


@flow(name="selection-ablation", flow_run_name=_run_name, persist_result=True)
def selection_ablation(config: PipelineConfig, budget: int | None = None,
                       selectors: list[str] | None = None, seeds: int = DEFAULT_SEEDS,
                       learning_rates: list[float] | None = None, arms: list[Arm] | None = None,
                       from_stage: str | None = None) -> dict[str, Any]:
    """Every selector x seed selects `budget` rows (default: one pass of training) from the same pool, trains the
    same adapter and is evaluated, with the base model, on the held-out rows and `eval.sets`; the report says
    which selectors beat random beyond noise (`selectors`: all when empty; NAME:SCORER runs one on another
    scorer). `learning_rates`: every selector at each (random included); `arms`: explicit {selector, seeds,
    learning_rate} entries instead. `from_stage` forces a stage and everything that reads its output."""
    chosen = grid(selectors, seeds, learning_rates, arms)
    config = normalized(config)
    store = Store(config.store)
    ablation = planned(selection_ablation.name, lambda: ablation_plan(config, budget, arms=chosen), config,
                       budget=budget, arms=chosen, from_stage=from_stage)
    first = run_plan(ablation.plan.needed_by([ablation.pool]))
    if first.ok:
        check_budget(first, ablation.budget)
        run = merged(first, run_plan(ablation.plan, from_stage))
    else:
        run = first
    table = publish_table(run, f"selection-ablation: {config.name}", "selection-ablation-run")
    key = run.ref(ablation.report.label).key
    manifest = store.manifest(key)
    return {**table, "budget": ablation.budget, "selectors": list(dict.fromkeys(a.selector for a in chosen)),
            "seeds": max(arm.seeds for arm in chosen), "arms": [arm.model_dump() for arm in chosen],
            "report": {"key": key, "sentence": manifest["stats"]["sentence"],
                       "files": {name: store.path(key, "files", name) for name in ("report.md", REPORT_JSON, CHART)},
                       **{name: manifest["stats"][name] for name in ("judged", "judged_sentence")
                          if name in manifest["stats"]}}}


def run_ablation(config: Any, budget: int | None = None, arms: Sequence[Arm] | None = None,
                 from_stage: str | None = None) -> dict[str, Any]:
    """Run the flow on `arms` (default: every selector, 3 seeds) and return its table and report; raises
    PipelineFailed (with the table) when a step failed."""
    from flows.pipeline import task_runner

    config = normalized(config)
    chosen = grid(arms=arms)

    def checked() -> AblationPlan:
        ablation = ablation_plan(config, budget, arms=chosen)
        if from_stage:
            ablation.plan.descendants(from_stage)  # names a stage of the plan, or fails
        return ablation

    return run_flow(selection_ablation, checked, config, task_runner(config.runner, config.store), budget=budget,
                    arms=chosen, from_stage=from_stage)
