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
# The selection ablation's shared part: the sft recipe's stages up to the scores (not its cluster: the pool is
# clustered instead), the evaluation sets and the pool they leave; flows/ablation.py fans out the rest per
# selector and seed.
ABLATION = recipe(
    "selection-ablation",
    "ingest.source", "ingest", "embed", "dedup", "base_model", "iqs.train", "iqs",
    "eval.holdout",   # conversations → eval_set: the held-out rows
    "eval.set",       # one per file → eval_set
    "eval.pool",      # conversations + every eval_set → pool
    Entry("cluster", reads={"conversations": "pool"}),  # the pool's clusters: no held-out row on the map
)
IQS_TRAINING = recipe("iqs-training", "iqs.train")
SELF_INSTRUCT = recipe("self-instruct", "self_instruct")
RECIPES = {r.name: r for r in (SFT, ABLATION, IQS_TRAINING, SELF_INSTRUCT)}
# what the fan-out of the ablation adds per chain, and its report
ABLATION_CHAIN = ("iqs", "select", "format", "train", "evaluate", "ablation.report")
BUILT_IN = frozenset(name for r in RECIPES.values() for name in r.stages()) | frozenset(ABLATION_CHAIN)
