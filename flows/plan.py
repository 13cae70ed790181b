"""A plan: the steps of one flow run, their wiring and their store keys, checked before any stage runs.

`Plan.add` takes a stage, its parameters and its inputs (earlier steps, or store keys); a wiring mistake (an
input `build` does not take, a required input missing, a missing package) is bad input at once, never a
TypeError retried on a worker. `plan_recipe` turns a recipe (flows/recipes.py) and a config into a plan by one
rule: an input reads the nearest earlier producer of its dataset in the recipe (`**name` inputs every earlier
producer; an entry may point an input at another dataset). The steps come out in dependency order, each after
what it reads, in the order of `build`'s inputs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flows.recipes import SFT, Recipe
from storage.stage import Call, Stage
from storage.store import Store
from tasks.errors import BadInputError
from tasks.stages import get


@dataclass(eq=False)
class Step:
    stage: Stage
    label: str
    params: Any
    inputs: dict[str, Step | str]  # input name -> the step that makes it, or a store key the config gives
    shard: tuple[int, int] | None = None  # a part (i, n) of a sharded stage
    key: str = ""
    fingerprint: dict[str, Any] | None = None  # what the key holds beyond the parameters (a source's checksum)

    @property
    def upstream(self) -> list[Step]:
        return [v for v in self.inputs.values() if isinstance(v, Step)]

    def input_keys(self) -> dict[str, str]:
        return {name: v.key if isinstance(v, Step) else v for name, v in self.inputs.items()}


@dataclass
class Plan:
    store: Store
    steps: list[Step] = field(default_factory=list)  # always in dependency order: add() needs upstream first
    memory_gb: float | None = None  # resources.memory_gb: what each step's build sizes its batches to

    def add(self, stage: Stage, params: Any, inputs: Mapping[str, Step | str] | None = None,
            label: str | None = None, shard: tuple[int, int] | None = None) -> Step:
        label = label or stage.name
        inputs = dict(inputs or {})
        for name, value in inputs.items():
            if stage.input(name) is None:
                raise BadInputError(f"stage {stage.name} takes no input {name!r} (its inputs: "
                                    f"{', '.join(i.name for i in stage.inputs) or 'none'})", field=f"{label}.{name}")
            if isinstance(value, Step) and value not in self.steps:
                raise BadInputError(f"input {name!r} of {label} comes from {value.label}, which is not planned "
                                    "before it", field=f"{label}.{name}")
        for item in stage.inputs:
            if not (item.optional or item.many or item.name in inputs):
                raise BadInputError(f"stage {stage.name} needs the input {item.name!r}, and nothing in this flow "
                                    "makes it", field=f"{label}.{item.name}")
        for requirement in stage.requires:
            if requirement.missing():
                raise BadInputError(f"stage {stage.name} needs the package {requirement.module!r}: "
                                    f"{requirement.install}", field=label)
        if any(step.label == label for step in self.steps):
            raise BadInputError(f"two steps of this flow are named {label!r}", field=label)
        if shard is not None and stage.shard_input is None:
            raise BadInputError(f"stage {stage.name} cannot run in parts (it declares no shard_input)", field=label)
        step = Step(stage, label, params, inputs, shard)
        self.steps.append(step)
        return step

    def compute_keys(self) -> Plan:
        """Every step's store key (fingerprints read their files here); keys the config gives must be there. A
        step keyed already (merged from another plan) keeps its key."""
        for step in self.steps:
            if step.key:
                continue
            for name, value in step.inputs.items():
                if isinstance(value, str) and not self.store.verify(value):
                    raise BadInputError(f"input {name!r} of {step.label} is {value!r}, which is not a complete "
                                        f"dataset in the store {self.store.url}", field=f"{step.label}.{name}")
            step.fingerprint = step.stage.fingerprint_of(step.params)
            step.key = step.stage.key(step.params, step.input_keys(), step.shard, step.fingerprint)
        return self

    def merge(self, other: Plan, label: Callable[[Step], str] = lambda step: step.label) -> dict[Step, Step]:
        """Add the steps of `other` (a keyed plan) whose key this plan lacks, labelled by `label`: a step both
        plans make is planned once, whoever planned it. Returns each step of `other` → its step in this plan."""
        have = {step.key: step for step in self.steps if step.key}
        mapped: dict[Step, Step] = {}
        for step in other.steps:
            if step.key not in have:
                # an input that is a step of this plan already (an arm matching another's tokens) stays itself
                inputs = {name: mapped.get(v, v) if isinstance(v, Step) else v for name, v in step.inputs.items()}
                added = self.add(step.stage, step.params, inputs, label(step), step.shard)
                added.key, added.fingerprint = step.key, step.fingerprint
                have[step.key] = added
            mapped[step] = have[step.key]
        return mapped

    def names(self) -> list[str]:
        """The stage names of this plan, in dependency order (what --from and --until accept)."""
        return list(dict.fromkeys(step.stage.name for step in self.steps))

    def named(self, name: str, option: str) -> list[Step]:
        found = [s for s in self.steps if name in (s.stage.name, s.label)]
        if not found:
            raise BadInputError(f"not a stage of this flow ({', '.join(self.names())})", field=f"{option} {name}")
        return found

    def descendants(self, name: str) -> set[Step]:
        """The steps of stage `name` and every step that reads what they make, transitively."""
        found = set(self.named(name, "--from"))
        for step in self.steps:  # dependency order: an upstream step is decided before its readers
            if any(up in found for up in step.upstream):
                found.add(step)
        return found

    def until(self, name: str) -> Plan:
        """Only the steps of stage `name` and what they need."""
        return self.needed_by(self.named(name, "--until"))

    def needed_by(self, steps: Iterable[Step]) -> Plan:
        """Only `steps` and what they need, in this plan's order."""
        needed = set(steps)
        for step in reversed(self.steps):
            if step in needed:
                needed.update(step.upstream)
        return Plan(self.store, [s for s in self.steps if s in needed], self.memory_gb)


# -- a recipe's wiring -----------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Node:
    stage: Stage
    call: Call
    label: str
    wired: dict[str, _Node | str] = field(default_factory=dict)
    shard: tuple[int, int] | None = None
    gathers: bool = False  # the gather step of a sharded stage (its parts are wired already)


def _nodes(stage: Stage, call: Call, label: str) -> list[_Node]:
    """One node per call; a call of `shards` > 1 becomes its parts plus the gather step that makes the output."""
    if call.shards <= 1:
        return [_Node(stage, call, label)]
    if stage.shard_input is None:
        raise BadInputError(f"stage {stage.name} cannot run in parts", field=f"{label}.shards")
    parts = [_Node(stage, call, f"{label}[{i}/{call.shards}]", shard=(i, call.shards)) for i in range(call.shards)]
    gather = _Node(stage.gathered(), Call(call.params), label, {f"part_{i:03d}": p for i, p in enumerate(parts)},
                   gathers=True)
    return [*parts, gather]


def plan_recipe(recipe: Recipe, config: Any, store: Store, params: Mapping[str, Any] | None = None) -> Plan:
    """The checked plan of `recipe` for `config`: every entry's calls, each input wired to the nearest earlier
    producer of its dataset. `params`: a stage's parameters given directly (a flow whose whole config is one
    stage's parameters: iqs-training, self-instruct)."""
    made: list[tuple[str, _Node]] = []  # (dataset, the node that makes it), in recipe order
    nodes: list[_Node] = []
    for entry in recipe.with_plugins().entries:
        stage = get(entry.stage)
        heads = []
        given = (params or {}).get(stage.name)
        for call in [Call(given)] if given is not None else stage.calls(config):
            group = _nodes(stage, call, call.label or entry.label or stage.name)
            for node in group:
                if not node.gathers:
                    _wire(node, made, entry.reads)
            nodes += group
            heads.append(group[-1])
        made += [(stage.dataset, head) for head in heads]  # the calls of one entry never read each other
    plan = Plan(store, memory_gb=getattr(getattr(config, "resources", None), "memory_gb", None))
    added: dict[_Node, Step] = {}
    readers = {id(up) for node in nodes for up in node.wired.values() if isinstance(up, _Node)}
    for sink in [n for n in nodes if id(n) not in readers]:
        _add(sink, plan, added, set())
    return plan.compute_keys()


def pipeline_plan(config: Any, store: Store) -> Plan:
    """The sft-pipeline flow's plan (its recipe, flows/recipes.py, with the plugin stages)."""
    return plan_recipe(SFT, config, store)


def _wire(node: _Node, made: list[tuple[str, _Node]], reads: Mapping[str, str]) -> None:
    """Each input of `node`: given by the config, else the nearest earlier producer of its dataset."""
    for item in node.stage.inputs:
        if item.name in node.call.inputs:
            node.wired[item.name] = node.call.inputs[item.name]
            continue
        if item.name in node.call.reads:
            label = node.call.reads[item.name]
            named = [producer for _, producer in made if producer.label == label]
            if not named:
                raise BadInputError(f"{node.label} reads {item.name!r} from {label}, which no stage before it in "
                                    "this flow makes", field=f"{node.label}.{item.name}")
            node.wired[item.name] = named[-1]
            continue
        if not node.stage.wants(item.name, node.call.params):
            continue
        dataset = reads.get(item.name, item.name)
        producers = [producer for name, producer in made if name == dataset]
        if item.many:
            node.wired.update({f"{item.name}_{i:03d}": p for i, p in enumerate(producers)})
        elif producers:
            node.wired[item.name] = producers[-1]
        elif not item.optional:
            raise BadInputError(f"stage {node.stage.name} needs {dataset!r}, and no stage before it in this flow "
                                "makes it", field=f"{node.label}.{item.name}")


def _add(node: _Node, plan: Plan, added: dict[_Node, Step], visiting: set[_Node]) -> Step:
    """Add `node` after everything it reads (depth first, inputs in `build`'s order)."""
    if node in added:
        return added[node]
    if node in visiting:
        raise BadInputError(f"the stages around {node.label} read each other's outputs in a circle", field=node.label)
    visiting.add(node)
    inputs = {name: _add(up, plan, added, visiting) if isinstance(up, _Node) else up
              for name, up in node.wired.items()}
    added[node] = plan.add(node.stage, node.call.params, inputs, node.label, node.shard)
    return added[node]


def run_alone(stage: Stage, params: Any, inputs: Mapping[str, str], store: Store, force: bool = False) -> Any:
    """One stage on datasets of the store, without Prefect (the CLI's `sftflow stage`): checked as a plan of
    one step, then run (or found in the store). The Secret blocks its params name are in the environment
    while it runs, as in a Prefect task (flows/stage.py)."""
    from flows.secrets import secrets_in_env
    from storage.stage import run_stage

    for item in stage.inputs:
        if not (item.optional or item.many or item.name in inputs):
            raise BadInputError(f"stage {stage.name} needs the input {item.name!r}: give --input {item.name}=KEY",
                                field=f"{stage.name}.{item.name}")
    plan = Plan(store)
    step = plan.add(stage, params, dict(inputs))
    plan.compute_keys()
    with secrets_in_env(params):
        return run_stage(stage, params, {name: store.ref(key) for name, key in inputs.items()}, store, key=step.key,
                         force=force, fingerprint=step.fingerprint)


def run_in_order(plan: Plan, force: bool = False) -> dict[str, Any]:
    """Every step of a plan, one after the other in this process, without Prefect (the CLI's small flows:
    `sftflow evaluate`): each found in the store or built. Returns each step's StageResult by label."""
    from storage.stage import run_stage

    results: dict[Step, Any] = {}
    for step in plan.steps:
        inputs = {name: results[v].ref if isinstance(v, Step) else plan.store.ref(v) for name, v in step.inputs.items()}
        results[step] = run_stage(step.stage, step.params, inputs, plan.store, key=step.key, force=force,
                                  shard=step.shard, fingerprint=step.fingerprint, memory_gb=plan.memory_gb)
    return {step.label: result for step, result in results.items()}
