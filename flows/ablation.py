"""The `selection-ablation` flow: is a model tuned on my selection better than one tuned on a random sample?

One plan of stage steps (flows/plan.py): the pipeline's own steps up to the embeddings, the IQS scores and
the base model; the held-out split and the evaluation sets; the pool without them (eval.pool) and its clusters;
then per selector and seed a select → format → train chain, each adapter (and the base model once) evaluated
on every set, and one report. A selector is a (scorer, rule) pair whose select parameters make exactly `budget`
rows; every chain trains with the same format, adapter, steps and batch, only `train.seed` changes with the seed. Each
step is keyed by its store key, so a second identical run is served from the store and a selector added later
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
from flows.plan import Plan, Step, pipeline_plan
from storage.store import Store
from tasks import scorers
from tasks.errors import BadInputError
from tasks.stages import get
from tasks.stages.ablation_report import CHART, REPORT_JSON, AblationReportParams, RunLabel
from tasks.stages.eval_holdout import HELDOUT
from tasks.stages.eval_pool import PoolParams
from tasks.stages.evaluate import EvaluateParams
from tasks.stages.select import SelectConfig

IQS = "iqs"  # the scores the pipeline's own iqs section makes
BASELINE = "random"
BASE_MODEL = "base model"
DEFAULT_SEEDS = 3


@dataclass(frozen=True)
class Selector:
    name: str
    scorer: str | None  # IQS, a scorer name (scored on the pool), or None: no scores (clusters alone)
    car_rule: bool  # CaR's rule under the budget (top by score + the best of every cluster); else the top N
    description: str

    @property
    def per_seed(self) -> bool:
        """A new sample per seed (the random scorer), not only a new training seed."""
        return self.scorer == "random"


SELECTORS = {s.name: s for s in (
    Selector("car", IQS, True, "IQS scores, CaR's rule under the budget: exactly N rows"),
    Selector("random", "random", False, "a random sample of N rows, a new one per seed (the baseline)"),
    Selector("top_score", IQS, False, "the N rows with the highest IQS score"),
    Selector("cluster_only", None, False, "round-robin over the clusters, nearest to the centroid first"),
    Selector("longest", "length", False, "the N rows with the longest answers"),
)}
DEFAULT_SELECTORS = tuple(SELECTORS)


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


def check_request(config: Any, selectors: Sequence[str], seeds: int, budget: int) -> list[Selector]:
    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise BadInputError(f"no selector {', '.join(map(repr, unknown))}; the selectors are "
                            f"{', '.join(SELECTORS)}", field="--selectors")
    if BASELINE not in selectors:
        raise BadInputError(f"the selectors must include {BASELINE!r}: every other one is compared with it",
                            field="--selectors")
    if len(set(selectors)) != len(selectors):
        raise BadInputError(f"a selector is named twice in {', '.join(selectors)}", field="--selectors")
    if seeds < 1:
        raise BadInputError(f"{seeds} seeds: at least 1", field="--seeds")
    if budget < 1:
        raise BadInputError(f"a budget of {budget} rows: at least 1", field="--budget")
    chosen = [SELECTORS[s] for s in selectors]
    needs_iqs = [s.name for s in chosen if s.scorer == IQS]
    if needs_iqs and config.iqs.scorer == scorers.NONE:
        raise BadInputError(f"selector(s) {', '.join(needs_iqs)} need IQS scores, and this config makes none "
                            "(iqs.scorer is none): set iqs.scorer (comet with iqs.revisions, probe, length, ...) "
                            "or leave them out", field="--selectors")
    return chosen


def select_params(selector: Selector, config: Any, budget: int) -> SelectConfig:
    if selector.car_rule:  # n1 becomes the largest value whose selection with the cluster rows is `budget`
        return SelectConfig(n1=budget, n2=config.select.n2, budget=budget)
    return SelectConfig(n1=budget, n2=0)  # the first N of the order: by score, or round-robin without scores


def evaluate_params(config: Any) -> EvaluateParams:
    """The training rendering (template, system, mask) at the length training sees."""
    fmt = config.format
    return EvaluateParams(template=fmt.template, system=fmt.system, train_on=fmt.train_on,
                          max_length=min(config.train.max_length or fmt.max_length, fmt.max_length),
                          resamples=config.eval.resamples, confidence=config.eval.confidence,
                          batch_size=config.eval.batch_size, precision=config.eval.precision)


def ablation_plan(config: Any, budget: int | None = None, selectors: Sequence[str] = DEFAULT_SELECTORS,
                  seeds: int = DEFAULT_SEEDS) -> AblationPlan:
    """The checked plan: unknown selectors, missing scores, bad wiring and missing files fail here."""
    budget = budget if budget is not None else default_budget(config)
    chosen = check_request(config, selectors, seeds, budget)
    pipeline = pipeline_plan(config, Store(config.store))
    select_step = pipeline.named("select", "select")[0]
    base_model = pipeline.named("train", "train")[0].inputs["base_model"]
    conversations, iqs_scores = select_step.inputs["conversations"], select_step.inputs.get("scored")
    clustering = select_step.inputs["clusters"]  # re-run on the pool: the selection's map holds no held-out row
    embeddings = clustering.inputs["embeddings"]
    plan = pipeline.needed_by([s for s in (conversations, embeddings, iqs_scores, base_model) if isinstance(s, Step)])

    sets: dict[str, Step] = {HELDOUT: plan.add(get("eval.holdout"), config.eval, {"conversations": conversations})}
    for entry in config.eval.sets:
        sets[entry.label] = plan.add(get("eval.set"), entry, label=f"eval.set[{entry.label}]")
    pool = plan.add(get("eval.pool"), PoolParams(),
                    {"conversations": conversations, **{f"eval_set_{i:03d}": s for i, s in enumerate(sets.values())}})

    clusters = plan.add(clustering.stage, clustering.params, {"embeddings": embeddings, "conversations": pool})
    scoring = get("iqs")
    evaluate, params = get("evaluate"), evaluate_params(config)
    runs: list[RunLabel] = []
    evaluations: dict[str, Step] = {}

    def evaluate_all(model: str, seed: int | None, adapter: Step | None) -> None:
        for set_name, eval_set in sets.items():
            inputs = {"eval_set": eval_set, "base_model": base_model, **({"adapter": adapter} if adapter else {})}
            name = f"evaluation_{len(evaluations):03d}"
            where = model if seed is None else f"{model}/{seed}"
            evaluations[name] = plan.add(evaluate, params, inputs, label=f"evaluate[{where}/{set_name}]")
            runs.append(RunLabel(input=name, model=model, seed=seed, eval_set=set_name))

    def formatted(selector: Selector, seed: int) -> Step:
        """The selection's format step: one per sample (per seed for random, else shared by every seed)."""
        sample = f"{selector.name}/{seed}" if selector.per_seed else selector.name
        if sample in chains:
            return chains[sample]
        scored: Step | str | None = iqs_scores if selector.scorer == IQS else None
        if selector.scorer not in (IQS, None):
            own = scorers.parse_config({"scorer": selector.scorer, **({"seed": seed} if selector.per_seed else {})})
            scored = plan.add(scoring, own, {"conversations": pool}, label=f"iqs[{sample}]")
        selected = plan.add(get("select"), select_params(selector, config, budget),
                            {"conversations": pool, "clusters": clusters,
                             **({"scored": scored} if scored is not None else {})}, label=f"select[{sample}]")
        chains[sample] = plan.add(get("format"), config.format, {"selection": selected, "base_model": base_model},
                                  label=f"format[{sample}]")
        return chains[sample]

    chains: dict[str, Step] = {}
    evaluate_all(BASE_MODEL, None, None)
    for selector in chosen:
        for seed in range(seeds):
            train = config.train.model_copy(update={"seed": seed, "eval_share": 0.0, "sample_prompts": []})
            adapter = plan.add(get("train"), train, {"tokenized": formatted(selector, seed), "base_model": base_model},
                               label=f"train[{selector.name}/{seed}]")
            evaluate_all(selector.name, seed, adapter)
    report = plan.add(get("ablation.report"),
                      AblationReportParams(runs=runs, baseline=BASELINE, resamples=config.eval.resamples,
                                           confidence=config.eval.confidence), evaluations)
    return AblationPlan(plan.compute_keys(), pool, report, budget)


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
                       from_stage: str | None = None) -> dict[str, Any]:
    """Every selector x seed selects `budget` rows (default: one pass of training) from the same pool, trains the
    same adapter and is evaluated, with the base model, on the held-out rows and `eval.sets`; the report says
    which selectors beat random beyond noise (`selectors`: all when empty). `from_stage` forces a stage and
    everything that reads its output."""
    selectors = list(selectors or DEFAULT_SELECTORS)
    store = Store(config.store)
    config = config.model_copy(update={"store": store.url})
    ablation = ablation_plan(config, budget, selectors, seeds)
    first = run_plan(ablation.plan.needed_by([ablation.pool]))
    if first.ok:
        check_budget(first, ablation.budget)
        run = merged(first, run_plan(ablation.plan, from_stage))
    else:
        run = first
    table = publish_table(run, f"selection-ablation: {config.name}", "selection-ablation-run")
    key = run.ref(ablation.report.label).key
    manifest = store.manifest(key)
    return {**table, "budget": ablation.budget, "selectors": list(selectors), "seeds": seeds,
            "report": {"key": key, "sentence": manifest["stats"]["sentence"],
                       "files": {name: store.path(key, "files", name) for name in ("report.md", REPORT_JSON, CHART)}}}


def run_ablation(config: Any, budget: int | None = None, selectors: Sequence[str] = DEFAULT_SELECTORS,
                 seeds: int = DEFAULT_SEEDS, from_stage: str | None = None) -> dict[str, Any]:
    """Run the flow and return its table and report; raises PipelineFailed (with the table) when a step failed."""
    from flows.pipeline import task_runner

    store_url = Store(config.store).url
    config = config.model_copy(update={"store": store_url})
    ablation = ablation_plan(config, budget, selectors, seeds)  # before a flow run (and Prefect's server) starts
    if from_stage:
        ablation.plan.descendants(from_stage)  # names a stage of the plan, or fails
    flow_fn = selection_ablation.with_options(task_runner=task_runner(config.runner, store_url))
    state = flow_fn(config=config, budget=budget, selectors=list(selectors), seeds=seeds, from_stage=from_stage,
                    return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result
