"""`evaluate`: a model (a train artifact, or the base model alone) on an evaluation set → the loss of every row
on its supervised tokens, rendered with the training template and mask (tasks/tokenize.py), plus the mean loss
and perplexity with a bootstrap interval (tasks/evaluate/). The key holds the model's key, the set's key and
the rendering, so the same model on the same set is evaluated once. Rows the template cannot fit (the answer
starts beyond max_length) go to the quarantine companion; they are the same rows for every model rendered
alike, so models evaluated on one set compare row by row.
"""
from __future__ import annotations

import json
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import Call, Stage, StageContext, StageOutput
from storage.store import DatasetRef, Store
from tasks.artifacts import Adapter
from tasks.calibrate import measured
from tasks.device import RESOLVED_IN_KEY, Precision, PrecisionSetting, PrecisionUse, use_available_cores
from tasks.errors import BadInputError
from tasks.evaluate.stats import CONFIDENCE, RESAMPLES
from tasks.stages.eval_holdout import HELDOUT

PART_ROWS = 1024  # rows per part: about a minute of SmolLM2-135M on 2 CPU cores in bf16, what a crash can cost
PRECISION = PrecisionUse(lambda p: p.precision, "evaluate.precision", measure=measured("lm-inference"))


class EvaluateParams(Section):
    template: str = Field("chatml", description="prompt template; an adapter must have been trained with it")
    system: str | None = Field(None, description="system prompt, as format.system (an adapter's must match)")
    train_on: Literal["all_assistant", "last_assistant", "prompt"] = Field(
        "all_assistant", description="which tokens are scored, as format.train_on (an adapter's must match)")
    max_length: int = Field(1024, ge=8, description="tokens kept per row; rows whose answer starts later are "
                                                    "quarantined")
    resamples: int = Field(RESAMPLES, ge=100, description="bootstrap resamples of the rows")
    confidence: float = Field(CONFIDENCE, gt=0, lt=1, description="interval coverage")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="auto: bf16 autocast where the GPU or the CPU has bf16 units, else fp32; the loss is "
                    "taken in fp32 from upcast logits either way (bf16 moves a set's mean loss by < 0.005)")
    batch_size: int = Field(16, ge=1, json_schema_extra=NOT_IN_KEY, description="rows per forward pass")
    part_rows: int = Field(PART_ROWS, ge=0, json_schema_extra=NOT_IN_KEY,
                           description="rows per part: each part is stored as it finishes, so a crash loses at most "
                                       "one (0: one piece)")
    prompts: list[str] = Field(default_factory=list, json_schema_extra=NOT_IN_KEY,
                               description="also answer these prompts (answers.json and the report)")
    max_new_tokens: int = Field(64, ge=1, json_schema_extra=NOT_IN_KEY)


def model_keys(store: Store, params: EvaluateParams, base_model: DatasetRef | None,
               adapter: DatasetRef | None) -> tuple[str, str | None]:
    """(base model key, adapter key) after checking that the adapter was trained on that base model and with
    this rendering: a loss under another template or mask would not be the loss training lowered."""
    if adapter is None:
        if base_model is None:
            raise BadInputError("evaluate needs a model: --input adapter=train-… and/or base_model=base_model-…",
                                field="adapter")
        return base_model.key, None
    trained = Adapter.read(store, adapter.key)
    if base_model is not None and base_model.key != trained.base_model:
        raise BadInputError(f"adapter {adapter.key} was trained on {trained.base_model}, not {base_model.key}",
                            field="base_model")
    rendering = {"template": params.template, "system": params.system, "train_on": params.train_on}
    data = trained.tokenized
    trained_with = {"template": data.template, "system": data.system, "train_on": data.train_on}
    for name, value in rendering.items():
        if trained_with[name] != value:
            raise BadInputError(f"adapter {adapter.key} was trained with {name} {trained_with[name]!r}, not "
                                f"{value!r}: evaluate it as it was trained", field=name)
    return trained.base_model, adapter.key


def build(ctx: StageContext, eval_set: DatasetRef, base_model: DatasetRef | None = None,
          adapter: DatasetRef | None = None) -> StageOutput:
    from tasks.evaluate.loss import LOSS_SCHEMA, check_rows, load_for_eval, model_limits, row_losses
    from tasks.format import COLUMNS, load_tokenizer, tokenize_batches
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    params: EvaluateParams = ctx.params
    store = ctx.store
    base_key, adapter_key = model_keys(store, params, base_model, adapter)
    precision = PRECISION.planned(params, ctx.fingerprint)
    threads = use_available_cores()
    tokenizer = load_tokenizer(store, store.ref(base_key))
    encoder = ConversationEncoder(tokenizer, get_template(params.template), max_length=params.max_length,
                                  train_on=params.train_on, system=params.system)
    table, quarantine, _ = tokenize_batches(encoder, store.iter_batches(eval_set.key, columns=COLUMNS,
                                                                        part=ctx.shard))
    base_dir = store.local_path(base_key, "files", "model")
    adapter_dir = store.local_path(adapter_key, "files", "adapter") if adapter_key else None
    facts = {"model": adapter_key or base_key, "base_model": base_key, "adapter": adapter_key,
             "eval_set": eval_set.key, "template": params.template, **precision.stats(), "threads": threads}
    if ctx.shard is not None and table.num_rows == 0:  # a part whose every row was quarantined
        return StageOutput(table=LOSS_SCHEMA.empty_table(), stats={**facts, "rows": 0, "quarantined":
                                                                   quarantine.num_rows},
                           companions={"quarantine": quarantine})
    vocab_size, limit = model_limits(base_dir, adapter_dir)
    rows = check_rows(table, source=eval_set.key, vocab_size=vocab_size, max_positions=limit)
    model = load_for_eval(base_dir, adapter_dir, precision)
    losses = row_losses(model, rows, batch_size=params.batch_size, advance=ctx.progress(len(rows), "evaluate"),
                        precision=precision)
    if ctx.shard is not None:  # a part: the gather summarizes every part's rows
        return StageOutput(table=losses.to_table(), stats={**facts, "rows": len(losses), "quarantined":
                                                           quarantine.num_rows}, companions={"quarantine": quarantine})
    return summarized(ctx, losses, quarantine, facts, model, tokenizer, precision)


def gather(ctx: StageContext, **part: DatasetRef) -> StageOutput:
    """Every part's row losses and quarantine in one evaluation, summarized over all of them."""
    from tasks.evaluate.loss import RowLosses

    refs = [part[name] for name in sorted(part)]
    manifests = [ctx.store.manifest(ref.key) for ref in refs]
    losses = RowLosses.from_table(pa.concat_tables([ctx.store.read_table(ref.key) for ref in refs]))
    quarantine = pa.concat_tables([ctx.store.read_table(m["companions"]["quarantine"]) for m in manifests])
    facts = {k: v for k, v in manifests[0]["stats"].items() if k not in ("rows", "quarantined")}
    return summarized(ctx, losses, quarantine, facts, None, None, None)


def summarized(ctx: StageContext, losses: Any, quarantine: pa.Table, facts: dict[str, Any], model: Any,
               tokenizer: Any, precision: Any) -> StageOutput:
    """The evaluation's output: row losses, the summary with its intervals, the report (and answers)."""
    from tasks.evaluate.stats import summarize

    params: EvaluateParams = ctx.params
    summary = summarize(losses, resamples=params.resamples, confidence=params.confidence)
    ctx.log.info("evaluate %s on %s: loss %.4f [%.4f, %.4f] over %d rows (%s)", facts["model"], facts["eval_set"],
                 summary.loss.estimate, summary.loss.low, summary.loss.high, len(losses), facts["precision"])
    stats = {**facts, "quarantined": quarantine.num_rows, **summary.as_dict()}
    files: dict[str, Any] = {}
    report = report_markdown(stats, params.confidence)
    if params.prompts:
        if model is None:  # gathered parts: the model is loaded once more, for the prompts alone
            model, tokenizer, precision = answering_model(ctx.store, facts)
        answers = prompt_answers(model, tokenizer, params, precision)
        files["answers.json"] = json.dumps(answers, indent=1, ensure_ascii=False)
        report += "\n\n## Answers\n\n" + "\n".join(f"- **{a['prompt']}** {a['answer']}" for a in answers)
    return StageOutput(table=losses.to_table(), stats=stats, files=files, companions={"quarantine": quarantine},
                       report=report)


def answering_model(store: Store, facts: dict[str, Any]) -> tuple[Any, Any, Any]:
    from tasks.device import pick_device
    from tasks.evaluate.loss import load_for_eval
    from tasks.format import load_tokenizer

    base, adapter = facts["base_model"], facts["adapter"]
    precision = Precision(facts["precision"], pick_device(), "as its parts computed")
    model = load_for_eval(store.local_path(base, "files", "model"),
                          store.local_path(adapter, "files", "adapter") if adapter else None, precision)
    return model, load_tokenizer(store, store.ref(base)), precision


def prompt_answers(model: Any, tokenizer: Any, params: EvaluateParams, precision: Any) -> list[dict[str, Any]]:
    from tasks.generate import answer
    from tasks.templates import for_tokenizer, get_template

    tokenizer.chat_template = for_tokenizer(get_template(params.template), tokenizer).chat_template()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return answer(model, tokenizer, params.prompts, system=params.system, max_new_tokens=params.max_new_tokens,
                  precision=precision)


def report_markdown(stats: dict[str, Any], confidence: float) -> str:
    loss, ppl, row_mean = stats["loss"], stats["perplexity"], stats["row_mean_loss"]
    share = f"{confidence:.0%}"
    return "\n".join([
        f"# evaluate: `{stats['model']}` on `{stats['eval_set']}`", "",
        f"{stats['rows']:,} rows, {stats['tokens']:,} supervised tokens scored ({stats['quarantined']:,} rows "
        f"quarantined: the answer starts beyond max_length); template `{stats['template']}`.", "",
        f"| | estimate | {share} interval |", "|---|---:|---|",
        f"| mean loss (nats / token) | {loss['estimate']:.4f} | [{loss['low']:.4f}, {loss['high']:.4f}] |",
        f"| perplexity | {ppl['estimate']:.3f} | [{ppl['low']:.3f}, {ppl['high']:.3f}] |",
        f"| row-mean loss | {row_mean['estimate']:.4f} | [{row_mean['low']:.4f}, {row_mean['high']:.4f}] |"])


def evaluate_params(config: Any) -> EvaluateParams:
    """The training rendering (template, system, mask) at the length training sees."""
    fmt = config.format
    return EvaluateParams(template=fmt.template, system=fmt.system, train_on=fmt.train_on,
                          max_length=min(config.train.max_length or fmt.max_length, fmt.max_length),
                          resamples=config.eval.resamples, confidence=config.eval.confidence,
                          batch_size=config.eval.batch_size, precision=config.eval.precision)


def set_labels(config: Any) -> dict[str, str]:
    """Each evaluation set's name → the step that makes it: the held-out rows, then each of `eval.sets`."""
    return {HELDOUT: "eval.holdout", **{entry.label: f"eval.set[{entry.label}]" for entry in config.eval.sets}}


def plan(config: Any) -> list[Call]:
    """One evaluation per set, each reading its own set (several steps make `eval_set`)."""
    params = evaluate_params(config)
    return [Call(params, label=f"evaluate[{name}]", reads={"eval_set": made})
            for name, made in set_labels(config).items()]


STAGE = Stage("evaluate", "1", build, params=EvaluateParams, output="evaluation", tags=("gpu", "model"),
              fingerprint=PRECISION.key, shard_input="eval_set", part_rows=lambda p: p.part_rows or None,
              gather=gather, plan=plan,
              description="per-row loss of a model on an evaluation set, mean loss and perplexity with intervals")
