"""The selection-ablation planner as it was before arms became configs (flows/ablation.py at e1d3bff), frozen as
the test oracle for key compatibility: every step it plans must keep its key in today's plan, so the chains
already in a user's store are served from it (tests/test_ablation_configs.py). Not used by sftflow itself."""
from __future__ import annotations

from typing import Any

from flows.plan import Plan, Step, plan_recipe
from flows.recipes import SFT, Entry, recipe
from storage.store import Store
from tasks import scorers, selectors
from tasks.selectors import PIPELINE_SCORER
from tasks.stages import get
from tasks.stages.ablation_report import AblationReportParams, RunLabel
from tasks.stages.eval_holdout import HELDOUT
from tasks.stages.evaluate import EvaluateParams
from tasks.stages.select import SelectConfig

LEGACY_ABLATION = recipe(
    "selection-ablation",
    "ingest.source", "ingest", "embed", "dedup", "base_model", "iqs.train", "iqs",
    "eval.holdout", "eval.set", "eval.pool",
    Entry("cluster", reads={"conversations": "pool"}),
)


def _evaluate_params(config: Any) -> EvaluateParams:
    fmt = config.format
    return EvaluateParams(template=fmt.template, system=fmt.system, train_on=fmt.train_on,
                          max_length=min(config.train.max_length or fmt.max_length, fmt.max_length),
                          resamples=config.eval.resamples, confidence=config.eval.confidence,
                          batch_size=config.eval.batch_size, precision=config.eval.precision)


def _scorer_config(config: Any, scorer: str, seed: int | None) -> Any:
    if scorers.get(scorer).train is None:
        return scorers.parse_config({"scorer": scorer, **({"seed": seed} if seed is not None else {})})
    member = type(scorers.parse_config({"scorer": scorer}))
    shared = {k: v for k, v in config.iqs.model_dump().items() if k in member.model_fields and k not in ("scorer",
                                                                                                        "model")}
    return scorers.parse_config({**shared, "scorer": scorer})


def _merged_scores(plan: Plan, config: Any, store: Store, scorer: str) -> Step:
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


def legacy_plan(config: Any, budget: int, arms: list[tuple[str, int, float | None]]) -> Plan:
    """The old plan of `arms` (selector, seeds, learning rate or None), keyed."""
    store = Store(config.store)
    plan = plan_recipe(LEGACY_ABLATION, config, store)
    step = {s.label: s for s in plan.steps}
    pool, clusters, base_model = step["eval.pool"], step["cluster"], step["base_model"]
    iqs_scores = step.get("iqs")
    sets = {HELDOUT: step["eval.holdout"], **{e.label: step[f"eval.set[{e.label}]"] for e in config.eval.sets}}
    evaluate, params = get("evaluate"), _evaluate_params(config)
    scored_by: dict[str, Step] = {}
    chains: dict[str, Step] = {}
    runs: list[RunLabel] = []
    evaluations: dict[str, Step] = {}

    def evaluate_all(model: str, seed: int | None, adapter: Step | None) -> None:
        for set_name, eval_set in sets.items():
            inputs = {"eval_set": eval_set, "base_model": base_model, **({"adapter": adapter} if adapter else {})}
            where = model if seed is None else f"{model}/{seed}"
            name = f"evaluation_{len(evaluations):03d}"
            evaluations[name] = plan.add(evaluate, params, inputs, label=f"evaluate[{where}/{set_name}]")
            runs.append(RunLabel(input=name, model=model, seed=seed, eval_set=set_name))

    def scores(selector: Any, sample: str, seed: int) -> Step | None:
        if selector.scorer in (PIPELINE_SCORER, None):
            return iqs_scores if selector.scorer == PIPELINE_SCORER else None
        own = _scorer_config(config, selector.scorer, seed if selector.per_seed else None)
        if scorers.get(selector.scorer).inputs(own):
            if selector.scorer not in scored_by:
                scored_by[selector.scorer] = _merged_scores(plan, config.model_copy(update={"iqs": own}), store,
                                                            selector.scorer)
            return scored_by[selector.scorer]
        return plan.add(get("iqs"), own, {"conversations": pool}, label=f"iqs[{sample}]")

    def formatted(selector: Any, seed: int) -> Step:
        sample = f"{selector.name}/{seed}" if selector.per_seed else selector.name
        if sample not in chains:
            scored = scores(selector, sample, seed)
            exactly = SelectConfig(n1=budget, n2=config.select.n2, budget=budget) if selector.rule == "car" else \
                SelectConfig(n1=budget, n2=0)
            selected = plan.add(get("select"), exactly,
                                {"conversations": pool, "clusters": clusters,
                                 **({"scored": scored} if scored is not None else {})}, label=f"select[{sample}]")
            chains[sample] = plan.add(get("format"), config.format, {"selection": selected, "base_model": base_model},
                                      label=f"format[{sample}]")
        return chains[sample]

    evaluate_all("base model", None, None)
    for name, seeds, rate in arms:
        selector = selectors.get(name)
        label = name if rate is None else f"{name}@lr={rate:g}"
        for seed in range(seeds):
            update = {"seed": seed, "eval_share": 0.0, "sample_prompts": [],
                      **({"learning_rate": rate} if rate is not None else {})}
            adapter = plan.add(get("train"), config.train.model_copy(update=update),
                               {"tokenized": formatted(selector, seed), "base_model": base_model},
                               label=f"train[{label}/{seed}]")
            evaluate_all(label, seed, adapter)
    plan.add(get("ablation.report"), AblationReportParams(runs=runs, baseline="random",
                                                          resamples=config.eval.resamples,
                                                          confidence=config.eval.confidence), evaluations)
    return plan.compute_keys()
