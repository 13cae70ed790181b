"""The `selection-ablation` flow: is a model tuned on my selection better than one tuned on a random sample?

One plan of stage steps (flows/plan.py): its recipe (flows/recipes.py: the pipeline's own stages up to the IQS
scores and the base model; the held-out split and the evaluation sets; the pool without them and its clusters),
then per arm (a selector at a learning rate) and seed a select → format → train chain, each adapter (and the
base model once) evaluated on every set, and one report. A selector (tasks/selectors/) is a scorer and a rule
whose select parameters make exactly `budget` rows; `car:probe` runs CaR's rule on the probe scorer, planned
(trained, scored) as the pipeline would plan that scorer. Every chain trains with the same format, adapter,
steps and batch; only `train.seed` changes with the seed, and an arm's learning rate, when it names one. Each
step is keyed by its store key, so a second identical run is served from the store and an arm added later
trains only its own chains. The plan runs in two parts: first what the pool needs, so a budget larger than the
pool is an error before anything trains.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.config import PipelineConfig
from flows.execute import Run, publish_table, run_plan
from flows.plan import Plan, Step, plan_recipe
from flows.recipes import ABLATION, SFT
from flows.runner import normalized, planned, run_flow
from storage.store import Store
from tasks import scorers, selectors
from tasks.errors import BadInputError
from tasks.selectors import BASELINE, PIPELINE_SCORER, Selector
from tasks.stages import get
from tasks.stages.ablation_report import CHART, REPORT_JSON, AblationReportParams, RunLabel
from tasks.stages.eval_holdout import HELDOUT
from tasks.stages.evaluate import EvaluateParams
from tasks.stages.select import SelectConfig

BASE_MODEL = "base model"
DEFAULT_SEEDS = 3
DEFAULT_SELECTORS = ("car", "random", "top_score", "cluster_only", "longest")


@dataclass(frozen=True)
class Arm:
    """One selector trained at one learning rate (None: train.learning_rate), for `seeds` seeds."""

    selector: str  # a selector name, or NAME:SCORER
    seeds: int
    learning_rate: float | None = None

    @property
    def label(self) -> str:
        """The model's name in the report: the selector, and the learning rate when the arm names one."""
        return self.selector if self.learning_rate is None else f"{self.selector}@lr={self.learning_rate:g}"


def grid(selector_names: Sequence[str], seeds: int, learning_rates: Sequence[float] | None = None) -> list[Arm]:
    """Every selector at every learning rate (at train.learning_rate when none is given)."""
    if not learning_rates:
        return [Arm(name, seeds) for name in selector_names]
    return [Arm(name, seeds, rate) for rate in learning_rates for name in selector_names]


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
    if not any(s.name == BASELINE for s in chosen.values()):
        raise BadInputError(f"the selectors must include {BASELINE!r}: every other one is compared with it",
                            field="--selectors")
    labels = [arm.label for arm in arms]
    if len(set(labels)) != len(labels):
        raise BadInputError(f"a selector is named twice in {', '.join(labels)}", field="--selectors")
    for arm in arms:
        if arm.seeds < 1:
            raise BadInputError(f"{arm.seeds} seeds for {arm.label}: at least 1", field="--seeds")
        if arm.learning_rate is not None and not arm.learning_rate > 0:
            raise BadInputError(f"a learning rate of {arm.learning_rate} for {arm.selector}: it must be positive",
                                field="--learning-rates")
    rates = {arm.learning_rate for arm in arms}
    for rate in rates - {None}:  # every learning rate is compared with random at that rate
        if not any(a.learning_rate == rate and chosen[a.selector].name == BASELINE for a in arms):
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


def evaluate_params(config: Any) -> EvaluateParams:
    """The training rendering (template, system, mask) at the length training sees."""
    fmt = config.format
    return EvaluateParams(template=fmt.template, system=fmt.system, train_on=fmt.train_on,
                          max_length=min(config.train.max_length or fmt.max_length, fmt.max_length),
                          resamples=config.eval.resamples, confidence=config.eval.confidence,
                          batch_size=config.eval.batch_size, precision=config.eval.precision)


def scorer_config(config: Any, scorer: str, seed: int | None) -> Any:
    """A selector's own scorer: one that trains takes the pipeline's revision settings (what both declare)."""
    if scorers.get(scorer).train is None:
        return scorers.parse_config({"scorer": scorer, **({"seed": seed} if seed is not None else {})})
    member = type(scorers.parse_config({"scorer": scorer}))
    shared = {k: v for k, v in config.iqs.model_dump().items() if k in member.model_fields and k not in ("scorer",
                                                                                                        "model")}
    return scorers.parse_config({**shared, "scorer": scorer})


def ablation_plan(config: Any, budget: int | None = None, selector_names: Sequence[str] = DEFAULT_SELECTORS,
                  seeds: int = DEFAULT_SEEDS, arms: Sequence[Arm] | None = None) -> AblationPlan:
    """The checked plan: unknown selectors or scorers, missing scores, bad wiring and missing files fail here.
    `arms` (selector x learning rate x seeds) replace `selector_names` x `seeds` when given."""
    budget = budget if budget is not None else default_budget(config)
    arms = list(arms) if arms is not None else grid(selector_names, seeds)
    chosen = check_request(config, arms, budget)
    store = Store(config.store)
    plan = plan_recipe(ABLATION, config, store)
    step = {s.label: s for s in plan.steps}
    pool, clusters, base_model = step["eval.pool"], step["cluster"], step["base_model"]
    iqs_scores = step.get("iqs")
    sets: dict[str, Step] = {HELDOUT: step["eval.holdout"],
                             **{entry.label: step[f"eval.set[{entry.label}]"] for entry in config.eval.sets}}
    evaluate, params = get("evaluate"), evaluate_params(config)
    runs: list[RunLabel] = []
    evaluations: dict[str, Step] = {}
    scored_by: dict[str, Step] = {}  # a trained (or embedding-reading) scorer's scores, planned once

    def evaluate_all(model: str, seed: int | None, adapter: Step | None) -> None:
        for set_name, eval_set in sets.items():
            inputs = {"eval_set": eval_set, "base_model": base_model, **({"adapter": adapter} if adapter else {})}
            name = f"evaluation_{len(evaluations):03d}"
            where = model if seed is None else f"{model}/{seed}"
            evaluations[name] = plan.add(evaluate, params, inputs, label=f"evaluate[{where}/{set_name}]")
            runs.append(RunLabel(input=name, model=model, seed=seed, eval_set=set_name))

    def scores(selector: Selector, sample: str, seed: int) -> Step | str | None:
        if selector.scorer in (PIPELINE_SCORER, None):
            return iqs_scores if selector.scorer == PIPELINE_SCORER else None
        own = scorer_config(config, selector.scorer, seed if selector.per_seed else None)
        if scorers.get(selector.scorer).inputs(own):  # trained, or reading embeddings: as the pipeline plans it
            if selector.scorer not in scored_by:
                scored_by[selector.scorer] = merged_scores(plan, config.model_copy(update={"iqs": own}), store,
                                                           selector.scorer)
            return scored_by[selector.scorer]
        return plan.add(get("iqs"), own, {"conversations": pool}, label=f"iqs[{sample}]")

    def formatted(selector: Selector, seed: int) -> Step:
        """The selection's format step: one per sample (per seed for random, else shared by every seed)."""
        sample = f"{selector.name}/{seed}" if selector.per_seed else selector.name
        if sample not in chains:
            scored = scores(selector, sample, seed)
            selected = plan.add(get("select"), SelectConfig.exactly(budget, selector.rule, config.select.n2),
                                {"conversations": pool, "clusters": clusters,
                                 **({"scored": scored} if scored is not None else {})}, label=f"select[{sample}]")
            chains[sample] = plan.add(get("format"), config.format, {"selection": selected,
                                                                     "base_model": base_model},
                                      label=f"format[{sample}]")
        return chains[sample]

    chains: dict[str, Step] = {}
    evaluate_all(BASE_MODEL, None, None)
    for arm in arms:
        selector = chosen[arm.selector]
        for seed in range(arm.seeds):
            update = {"seed": seed, "eval_share": 0.0, "sample_prompts": [],
                      **({"learning_rate": arm.learning_rate} if arm.learning_rate is not None else {})}
            adapter = plan.add(get("train"), config.train.model_copy(update=update),
                               {"tokenized": formatted(selector, seed), "base_model": base_model},
                               label=f"train[{arm.label}/{seed}]")
            evaluate_all(arm.label, seed, adapter)
    report = plan.add(get("ablation.report"),
                      AblationReportParams(runs=runs, baseline=BASELINE, resamples=config.eval.resamples,
                                           confidence=config.eval.confidence), evaluations)
    return AblationPlan(plan.compute_keys(), pool, report, budget)


def merged_scores(plan: Plan, config: Any, store: Store, scorer: str) -> Step:
    """The iqs step of `config`'s own pipeline plan, added to `plan` with what it needs: steps `plan` already
    has (the same key: ingest, embed, dedup) are shared, the others (the scorer's training) added, labelled by
    the scorer."""
    own = plan_recipe(SFT.until("iqs"), config, store)
    target = own.named("iqs", "iqs")[0]
    known = {step.key: step for step in plan.steps if step.key}
    mapped: dict[Step, Step] = {}
    for step in own.needed_by([target]).steps:
        if step.key in known:
            mapped[step] = known[step.key]
            continue
        inputs = {name: mapped[v] if isinstance(v, Step) else v for name, v in step.inputs.items()}
        mapped[step] = plan.add(step.stage, step.params, inputs, label=f"{step.label}[{scorer}]", shard=step.shard)
    return mapped[target]


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


def arms_of(selector_names: list[str] | None, seeds: int, learning_rates: list[float] | None,
            arms: list[dict[str, Any]] | None) -> list[Arm]:
    """The flow's arms from its parameters: explicit `arms`, else every selector at every learning rate."""
    if arms:
        return [Arm(**arm) for arm in arms]
    return grid(list(selector_names or DEFAULT_SELECTORS), seeds, learning_rates)


@flow(name="selection-ablation", flow_run_name=_run_name, persist_result=True)
def selection_ablation(config: PipelineConfig, budget: int | None = None,
                       selectors: list[str] | None = None, seeds: int = DEFAULT_SEEDS,
                       learning_rates: list[float] | None = None, arms: list[dict[str, Any]] | None = None,
                       from_stage: str | None = None) -> dict[str, Any]:
    """Every selector x seed selects `budget` rows (default: one pass of training) from the same pool, trains the
    same adapter and is evaluated, with the base model, on the held-out rows and `eval.sets`; the report says
    which selectors beat random beyond noise (`selectors`: all when empty; NAME:SCORER runs one on another
    scorer). `learning_rates`: every selector at each (random included); `arms`: explicit {selector, seeds,
    learning_rate} entries instead. `from_stage` forces a stage and everything that reads its output."""
    chosen = arms_of(selectors, seeds, learning_rates, arms)
    config = normalized(config)
    store = Store(config.store)
    ablation = planned(selection_ablation.name, lambda: ablation_plan(config, budget, arms=chosen), config,
                       budget=budget, arms=[arm.__dict__ for arm in chosen], seeds=seeds, from_stage=from_stage)
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
            "seeds": seeds, "arms": [arm.__dict__ for arm in chosen],
            "report": {"key": key, "sentence": manifest["stats"]["sentence"],
                       "files": {name: store.path(key, "files", name) for name in ("report.md", REPORT_JSON, CHART)}}}


def run_ablation(config: Any, budget: int | None = None, selector_names: Sequence[str] = DEFAULT_SELECTORS,
                 seeds: int = DEFAULT_SEEDS, from_stage: str | None = None,
                 learning_rates: Sequence[float] | None = None, arms: Sequence[Arm] | None = None) -> dict[str, Any]:
    """Run the flow and return its table and report; raises PipelineFailed (with the table) when a step failed."""
    from flows.pipeline import task_runner

    config = normalized(config)
    chosen = list(arms) if arms is not None else grid(selector_names, seeds, learning_rates)

    def checked() -> AblationPlan:
        ablation = ablation_plan(config, budget, arms=chosen)
        if from_stage:
            ablation.plan.descendants(from_stage)  # names a stage of the plan, or fails
        return ablation

    return run_flow(selection_ablation, checked, config, task_runner(config.runner, config.store), budget=budget,
                    arms=[arm.__dict__ for arm in chosen], seeds=seeds, from_stage=from_stage)
