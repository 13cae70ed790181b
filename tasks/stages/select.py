"""`select`: CaR's rule (top n1 by score + the top n2 of every cluster), a reason on every row (tasks/select.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from storage.params import PATH, WHEN_SET, Section
from storage.stage import Call, Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.artifacts import Removed, ScoresMade
from tasks.errors import BadInputError
from tasks.explorer import EXPLORER_FILE, explorer_html
from tasks.format import load_tokenizer
from tasks.ingest.config import SourceConfig
from tasks.ingest.revision import source_revision
from tasks.ingest.source import read_source
from tasks.listed import LISTED_MATCHING, match_listed
from tasks.select import SUMMARY_FILE, plots, report_markdown, select
from tasks.token_budget import TokenCounting, counting_of, token_counter


class SelectConfig(Section):
    n1: int = Field(1000, ge=0, description="take the n1 rows with the highest IQS score")
    n2: int = Field(1, ge=0, description="then the n2 best of every cluster that are not already taken")
    budget: int | None = Field(None, ge=1, description="total rows: n1 becomes the largest value whose selection "
                                                       "(with the cluster rows) fits")
    from_file: str | None = Field(None, json_schema_extra={**PATH, **WHEN_SET},
                                  description="take the rows a file lists instead (a published selection, in any "
                                              "format ingest reads), matched to the pool by their user turns "
                                              "(instruction and input); n1, n2 and budget do not apply")
    tokens: int | None = Field(None, ge=1, json_schema_extra=WHEN_SET,
                               description="a token budget instead of `budget`: rows by the rule until they hold this "
                                           "many training tokens (each row formatted as `format` does and cut at "
                                           "train.max_length), to compare rules at equal tokens")
    tokens_of: str | None = Field(None, json_schema_extra=WHEN_SET,
                                  description="a token budget read from another selection (its input `tokens_of`): "
                                              "as many training tokens as it holds; an ablation arm's "
                                              "`random@tokens=car`, which the ablation wires")
    every_row: bool | None = Field(None, json_schema_extra=WHEN_SET,
                                   description="take every row (one of each answer group): the whole pool, to "
                                               "train on everything; n1, n2 and budget do not apply")
    # filled from the format and train sections where a token budget is set (`plan`): how tokens are counted
    counting: TokenCounting | None = Field(None, json_schema_extra=WHEN_SET)

    @model_validator(mode="after")
    def one_budget(self) -> SelectConfig:
        if self.token_budget and (self.budget is not None or self.from_file):
            raise ValueError("a token budget is a budget of its own: leave select.budget and select.from_file empty")
        if self.tokens is not None and self.tokens_of:
            raise ValueError("select.tokens or select.tokens_of: one token budget")
        if self.every_row and (self.token_budget or self.budget is not None or self.from_file):
            raise ValueError("select.every_row takes every row: leave the budgets and from_file empty")
        return self

    @property
    def token_budget(self) -> bool:
        return self.tokens is not None or bool(self.tokens_of)


def build(ctx: StageContext, conversations: DatasetRef, clusters: DatasetRef, scored: DatasetRef | None = None,
          base_model: DatasetRef | None = None, tokens_of: DatasetRef | None = None) -> StageOutput:
    params = ctx.params
    count_tokens, tokens = None, params.tokens
    if params.token_budget:
        if base_model is None or params.counting is None:
            raise BadInputError("a token budget counts tokens with the base model's tokenizer: plan select after "
                                "base_model", field="select.tokens")
        count_tokens = token_counter(load_tokenizer(ctx.store, base_model), params.counting)
    if params.tokens_of:
        if tokens_of is None:
            raise BadInputError(f"select.tokens_of is {params.tokens_of!r}, but no selection is wired to the "
                                "tokens_of input (an ablation arm NAME@tokens=ARM wires it)", field="select.tokens_of")
        tokens = int(count_tokens(ctx.store.read_table(tokens_of.key)).sum())
        ctx.log.info("select: a token budget of %d, the training tokens of %s", tokens, tokens_of.key)
    conv = ctx.store.read_table(conversations.key)
    clus = ctx.store.read_table(clusters.key, columns=["id", "cluster", "distance", "pc1", "pc2"])
    scores = ctx.store.read_table(scored.key) if scored is not None else None
    listed, companions, matched = None, {}, {}
    if params.from_file:
        listed, companions["quarantine"], matched = listed_rows(params.from_file, conv, ctx.progress)
    selection, summary = select(conv, clus, scores, params.n1, params.n2, params.budget, listed, tokens,
                                count_tokens, every_row=bool(params.every_row))
    if tokens_of is not None:
        summary["tokens_of"] = tokens_of.key
    summary.update(matched)
    removed = Removed.read(ctx.store, conversations.key).by_reason
    if removed:  # the counts of the rows that never reached the selection
        summary["dedup_removed"] = removed
    if scored is not None:  # which scorer and model made the scores
        made = ScoresMade.read(ctx.store, scored.key)
        summary["scorer"], summary["scorer_model"] = made.scorer, made.model
    files = plots(clus, scores, selection)
    files[SUMMARY_FILE] = json.dumps(summary, indent=1)
    files[EXPLORER_FILE] = explorer_html(clus, selection, conv, scores, title=ctx.key)
    rule = f"the rows {params.from_file} lists, matched to the pool" if params.from_file else STAGE.description
    stats = {"rule": rule, **{k: v for k, v in summary.items() if k != "cluster_table"}}
    ctx.log.info("select: %s", selection_line(summary))
    explorer = ctx.store.path(ctx.key, "files", EXPLORER_FILE)
    report = report_markdown(summary, ctx.key, Path(explorer).as_uri() if ctx.store.is_local else explorer)
    return StageOutput(table=selection, files=files, stats=stats, report=report, companions=companions)


def selection_line(summary: dict[str, Any]) -> str:
    """What the rule took, in the words of the rule that ran (CaR's, a file's list, or every row)."""
    head = f"{summary['selected']} of {summary['rows']} rows"
    if summary["listed_rows"]:
        return (f"{head} (the file lists {summary['listed']}: {summary['matched']} matched to the pool, "
                f"{summary['unmatched']} not)")
    if summary["every_row"]:
        return f"{head} (every row: one of each answer group)"
    return (f"{head} ({summary['top_score_rows']} by score, {summary['cluster_top_rows']} added by the cluster "
            f"step; top n1 covers {summary['clusters_covered_by_top']} of {summary['clusters']} clusters)")


def listed_rows(path: str, pool: pa.Table, progress: Any) -> tuple[np.ndarray, pa.Table, dict[str, Any]]:
    """The pool rows a file lists, what of it was not used (unreadable, or matched to no pool row) and the
    counts; a file none of whose rows matches is bad input."""
    reading = read_source(SourceConfig(path=path), progress=progress)
    parts = list(reading.tables)
    if not parts:
        raise BadInputError("the selection file has no usable rows", file=path, field="select.from_file")
    rows, unmatched, counts = match_listed(pool, pa.concat_tables(parts))
    if not len(rows):
        raise BadInputError(f"none of the {counts['listed']} rows the file lists asks what a pool row asks: is it a "
                            "selection from this pool?", file=path, field="select.from_file")
    unreadable = reading.quarantine.table().to_pylist()
    quarantine = pa.concat_tables([unmatched, pa.Table.from_pylist(
        [{"id": None, "reason": q["reason"], "detail": f"row {q['row']}: {q['detail']}"} for q in unreadable],
        unmatched.schema)])
    return rows, quarantine, {**counts, "unreadable": len(unreadable)}


def fingerprint(params: SelectConfig) -> dict[str, Any] | None:
    """A selection read from a file: its content and how it is matched to the pool (tasks/listed.py; 2: loosely
    too); nothing beyond the parameters otherwise."""
    return {"from_file": source_revision(params.from_file), "matching": LISTED_MATCHING} if params.from_file else None


def plan(config: Any) -> list[Call]:
    """The config's selection; a token budget carries how format and train count tokens (derived here only)."""
    params = config.select
    return [Call(params.model_copy(update={"counting": counting_of(config) if params.token_budget else None}))]


def reads(params: SelectConfig) -> list[str]:
    """The scores whenever a recipe offers them; the base model only to count a token budget."""
    return ["scored", *(["base_model"] if params.token_budget else []), *(["tokens_of"] if params.tokens_of else [])]


STAGE = Stage("select", "1", build, params=SelectConfig, section="select", output="selection", fingerprint=fingerprint,
              plan=plan, reads=reads, description="CaR: the top n1 by score plus the top n2 of every cluster")
