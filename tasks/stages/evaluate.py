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

from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef, Store
from tasks.errors import BadInputError
from tasks.evaluate.stats import CONFIDENCE, RESAMPLES
from tasks.stages.format import Tokenized
from tasks.stages.train import Adapter


class EvaluateParams(Section):
    template: str = Field("chatml", description="prompt template; an adapter must have been trained with it")
    system: str | None = Field(None, description="system prompt, as format.system (an adapter's must match)")
    train_on: Literal["all_assistant", "last_assistant", "prompt"] = Field(
        "all_assistant", description="which tokens are scored, as format.train_on (an adapter's must match)")
    max_length: int = Field(1024, ge=8, description="tokens kept per row; rows whose answer starts later are "
                                                    "quarantined")
    resamples: int = Field(RESAMPLES, ge=100, description="bootstrap resamples of the rows")
    confidence: float = Field(CONFIDENCE, gt=0, lt=1, description="interval coverage")
    batch_size: int = Field(8, ge=1, json_schema_extra=NOT_IN_KEY, description="rows per forward pass")
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
    used = store.manifest(trained.tokenized.key).get("params") or {}
    trained_with = {"template": Tokenized.read(store, trained.tokenized.key).template, "system": used.get("system"),
                    "train_on": used.get("train_on", "all_assistant")}
    for name, value in rendering.items():
        if trained_with[name] != value:
            raise BadInputError(f"adapter {adapter.key} was trained with {name} {trained_with[name]!r}, not "
                                f"{value!r}: evaluate it as it was trained", field=name)
    return trained.base_model, adapter.key


def build(ctx: StageContext, eval_set: DatasetRef, base_model: DatasetRef | None = None,
          adapter: DatasetRef | None = None) -> StageOutput:
    from tasks.evaluate.loss import check_rows, load_for_eval, model_limits, row_losses
    from tasks.evaluate.stats import summarize
    from tasks.format import COLUMNS, load_tokenizer, tokenize_batches
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    params: EvaluateParams = ctx.params
    store = ctx.store
    base_key, adapter_key = model_keys(store, params, base_model, adapter)
    tokenizer = load_tokenizer(store, store.ref(base_key))
    encoder = ConversationEncoder(tokenizer, get_template(params.template), max_length=params.max_length,
                                  train_on=params.train_on, system=params.system)
    table, quarantine, _ = tokenize_batches(encoder, store.iter_batches(eval_set.key, columns=COLUMNS))
    base_dir = store.local_path(base_key, "files", "model")
    adapter_dir = store.local_path(adapter_key, "files", "adapter") if adapter_key else None
    vocab_size, limit = model_limits(base_dir, adapter_dir)
    rows = check_rows(table, source=eval_set.key, vocab_size=vocab_size, max_positions=limit)
    model = load_for_eval(base_dir, adapter_dir)
    losses = row_losses(model, rows, batch_size=params.batch_size, advance=ctx.progress(len(rows), "evaluate"))
    summary = summarize(losses, resamples=params.resamples, confidence=params.confidence)
    model_name = adapter_key or base_key
    ctx.log.info("evaluate %s on %s: loss %.4f [%.4f, %.4f] over %d rows", model_name, eval_set.key,
                 summary.loss.estimate, summary.loss.low, summary.loss.high, len(rows))
    stats = {"model": model_name, "base_model": base_key, "adapter": adapter_key, "eval_set": eval_set.key,
             "template": params.template, "quarantined": quarantine.num_rows, **summary.as_dict()}
    files: dict[str, Any] = {}
    report = report_markdown(stats, params.confidence)
    if params.prompts:
        answers = prompt_answers(model, tokenizer, params)
        files["answers.json"] = json.dumps(answers, indent=1, ensure_ascii=False)
        report += "\n\n## Answers\n\n" + "\n".join(f"- **{a['prompt']}** {a['answer']}" for a in answers)
    return StageOutput(table=losses.to_table(), stats=stats, files=files, companions={"quarantine": quarantine},
                       report=report)


def prompt_answers(model: Any, tokenizer: Any, params: EvaluateParams) -> list[dict[str, Any]]:
    from tasks.generate import answer
    from tasks.templates import for_tokenizer, get_template

    tokenizer.chat_template = for_tokenizer(get_template(params.template), tokenizer).chat_template()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return answer(model, tokenizer, params.prompts, system=params.system, max_new_tokens=params.max_new_tokens)


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


STAGE = Stage("evaluate", "1", build, params=EvaluateParams, output="evaluation", tags=("gpu", "model"),
              description="per-row loss of a model on an evaluation set, mean loss and perplexity with intervals")
