"""Every flow's recipe: the ordered list of the stages it runs, read top to bottom. One rule wires a recipe into
a plan (flows/plan.py): an input reads the nearest earlier producer of its dataset (`**name` inputs read every
earlier producer), so a stage that writes a dataset it also reads (dedup: conversations → conversations)
refines it for every stage after it. A stage's declaration says what it does; its recipe says where it goes.
A plugin stage names its place (`after="dedup"`), else it goes at the end of the sft recipe.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tasks.stages import registered


@dataclass(frozen=True)
class Entry:
    stage: str
    # an input that reads another dataset than the one it names: cluster on the ablation's pool reads `pool`
    reads: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None  # the run table's name; the stage's (or its calls') when None


@dataclass(frozen=True)
class Recipe:
    name: str  # the flow's name
    entries: tuple[Entry, ...]

    def stages(self) -> list[str]:
        return [entry.stage for entry in self.entries]

    def until(self, last: str) -> Recipe:
        """The entries up to `last`: what a recipe needs to make `last`'s output."""
        return replace(self, entries=self.entries[:self.stages().index(last) + 1])

    def with_plugins(self) -> Recipe:
        """The plugin stages (registered, in no recipe) at their places: after the stage they name when this
        recipe has it; the sft recipe takes the ones that name none at its end."""
        entries = list(self.entries)
        for stage in registered().values():
            if stage.name in BUILT_IN:
                continue
            names = [entry.stage for entry in entries]
            if stage.after in names:
                entries.insert(names.index(stage.after) + 1, Entry(stage.name))
            elif stage.after is None and self.name == SFT.name:
                entries.append(Entry(stage.name))
        return replace(self, entries=tuple(entries))


def _entry(value: Entry | str) -> Entry:
    return value if isinstance(value, Entry) else Entry(value)


def recipe(name: str, *entries: Entry | str) -> Recipe:
    return Recipe(name, tuple(_entry(e) for e in entries))


SFT = recipe(
    "sft-pipeline",
    "ingest.source",  # one per source → source
    "ingest",         # every source → conversations
    "embed",          # conversations → embeddings
    "dedup",          # conversations (+ embeddings) → conversations, refined
    "cluster",        # embeddings + conversations → clusters
    "base_model",     # the model to fine-tune (and the ifd scorer's)
    "iqs.train",      # revisions → iqs_model (scorers that train)
    "iqs",            # conversations (+ its scorer's inputs) → scored
    "select",         # conversations + clusters (+ scored) → selection
    "export",         # selection → files in other trainers' formats
    "format",         # selection + base_model → tokenized
    "train",          # tokenized + base_model → adapter
)
# The selection ablation (flows/ablation.py) plans this recipe once per arm and seed, each with the arm's own config
# (its scorer as `iqs`, its rule and budget as `select`, its seed in `train`), and merges the plans: a step that
# several arms make alike (ingest ... the pool's clusters, a shared scorer or selection) is one step, by its key.
POOL = {"conversations": "pool"}
_SHARED = ("ingest.source", "ingest", "embed", "dedup", "base_model")
_POOL = ("eval.holdout",  # conversations → eval_set: the held-out rows
         "eval.set",      # one per file → eval_set
         "prompts",       # one per prompt set (generate.prompts) → prompts
         "references",    # one per prompt set with reference answers (held-out rows', AlpacaEval's) → references
         "eval.pool",     # conversations + every eval_set → pool
         Entry("cluster", reads=POOL))  # the pool's clusters: no held-out row on the map
_ARM = (Entry("select", reads=POOL), "format", "train",
        "evaluate",       # one per evaluation set, each reading its own
        "generate")       # one per prompt set: the answers a judge compares
ABLATION = recipe(
    "selection-ablation", *_SHARED,
    "iqs.train", "iqs",   # every row scored, as the pipeline scores them (the arm's scorer trains or reads embeddings)
    *_POOL, *_ARM)
# an arm whose scorer needs nothing (length, random) scores only the pool
ABLATION_POOL_SCORED = recipe("selection-ablation", *_SHARED, *_POOL, Entry("iqs", reads=POOL), *_ARM)
# the base model, untrained, on every evaluation set (its answers are judged by `sftflow evaluate --against base`:
# in the ablation, arms are judged against random, so nobody would read them)
ABLATION_BASE = recipe("selection-ablation", *_SHARED, *_POOL, "evaluate")
# the judge's own model (the reward judge's, trained on public verdicts): planned once for every judged arm
JUDGING = recipe("judging", "judge.train")
IQS_TRAINING = recipe("iqs-training", "iqs.train")
SELF_INSTRUCT = recipe("self-instruct", "self_instruct")
RECIPES = {r.name: r for r in (SFT, ABLATION, IQS_TRAINING, SELF_INSTRUCT)}
BUILT_IN = frozenset(name for r in (*RECIPES.values(), JUDGING) for name in r.stages()) | {"ablation.report", "judge"}
