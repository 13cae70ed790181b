"""`generate`: a model (the base model alone, or with a trained adapter) answers a prompt set, in the chat template
it was trained with (format.template and format.system, as training rendered its rows), greedy by default.
Batched with the KV cache, prompts of similar length together, in the precision `precision` resolves to, in
row-range parts (a kill loses one part). Output: a conversations table (the prompt and the answer) that every
tool reads (explore, export), plus `prompt_id`, `finish_reason` (stop, length), `new_tokens` and `generator`.
The key holds the model's key, the prompts' key, the rendering and the sampling parameters."""
from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator

from storage.params import NOT_IN_KEY, Section
from storage.schema import CONVERSATION_SCHEMA, make_record
from storage.stage import Call, Stage, StageContext, StageOutput, concat_parts
from storage.store import DatasetRef, Store
from tasks.artifacts import Adapter
from tasks.calibrate import measured
from tasks.device import RESOLVED_IN_KEY, PrecisionSetting, PrecisionUse, use_available_cores
from tasks.errors import BadInputError
from tasks.stages.prompts import PromptSetConfig, as_set

DEFAULT_TEMPLATE = "chatml"  # format.template's default: the template a stage run alone renders with
PART_ROWS = 128  # prompts per part: a few minutes of SmolLM2-135M on 2 CPU cores, what a kill can cost
MAX_NEW_TOKENS = 256  # docs/evaluate.md: what 805 answers cost per model on 2 cores, and why this default
GENERATION_SCHEMA = pa.schema(list(CONVERSATION_SCHEMA) + [
    pa.field("prompt_id", pa.string()),  # the prompt's row in the prompts dataset
    pa.field("finish_reason", pa.string()),  # stop: the model ended its turn; length: max_new_tokens cut it
    pa.field("new_tokens", pa.int32()),
    pa.field("generator", pa.string()),  # the model's store key
])
PRECISION = PrecisionUse(lambda p: p.precision, "generate.precision", measure=measured("lm-inference"))


class GenerateConfig(Section):
    prompts: list[PromptSetConfig] = Field(default_factory=list, json_schema_extra=NOT_IN_KEY,
                                           description="prompt sets to answer: named sets (alpacaeval, vicuna, "
                                                       "koala, wizardlm, sinstruct, lima) or files of prompts")
    template: str | None = Field(None, description="prompt template; empty: format.template, as training rendered "
                                                   "(run alone: chatml)")
    system: str | None = Field(None, description="system prompt; empty: format.system, as training rendered")
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, description="tokens per answer at most")
    temperature: float = Field(0.0, ge=0, description="0: greedy; above: sampled")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (temperature > 0)")
    seed: int = Field(0, description="sampling seed (temperature > 0)")
    precision: PrecisionSetting = Field("auto", json_schema_extra=RESOLVED_IN_KEY,
                                        description="auto: the faster of fp32 and bf16 on this machine (measured)")
    batch_size: int = Field(32, ge=1, json_schema_extra=NOT_IN_KEY, description="prompts answered together")
    part_rows: int = Field(PART_ROWS, ge=0, json_schema_extra=NOT_IN_KEY,
                           description="prompts per part: each part is stored as it finishes (0: one piece)")

    _sets = field_validator("prompts", mode="before")(
        lambda cls, value: [as_set(v) for v in value] if isinstance(value, list) else value)


def check_model(store: Store, params: GenerateConfig, base_model: DatasetRef | None,
                adapter: DatasetRef | None) -> tuple[str, str | None]:
    """(base model key, adapter key): an adapter answers in the rendering it was trained with."""
    if adapter is None:
        if base_model is None:
            raise BadInputError("generate needs a model: --input adapter=train-… and/or base_model=base_model-…",
                                field="adapter")
        return base_model.key, None
    trained = Adapter.read(store, adapter.key)
    if base_model is not None and base_model.key != trained.base_model:
        raise BadInputError(f"adapter {adapter.key} was trained on {trained.base_model}, not {base_model.key}",
                            field="base_model")
    data = trained.tokenized
    for name, value, used in (("template", params.template, data.template), ("system", params.system, data.system)):
        if value != used:
            raise BadInputError(f"adapter {adapter.key} was trained with {name} {used!r}, not {value!r}: it answers "
                                "as it was trained", field=f"generate.{name}")
    return trained.base_model, adapter.key


def build(ctx: StageContext, prompts: DatasetRef, base_model: DatasetRef | None = None,
          adapter: DatasetRef | None = None) -> StageOutput:
    from tasks.evaluate.loss import load_for_eval
    from tasks.format import load_tokenizer
    from tasks.generate import generate_answers
    from tasks.templates import for_tokenizer, get_template

    params: GenerateConfig = ctx.params
    store = ctx.store
    base_key, adapter_key = check_model(store, params, base_model, adapter)
    precision = PRECISION.planned(params, ctx.fingerprint)
    threads = use_available_cores()
    tokenizer = load_tokenizer(store, store.ref(base_key))
    tokenizer.chat_template = for_tokenizer(get_template(params.template or DEFAULT_TEMPLATE), tokenizer
                                            ).chat_template()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = pa.concat_tables([pa.Table.from_batches([b]) for b in store.iter_batches(
        prompts.key, columns=["id", "source", "messages", "meta"], part=ctx.shard)])
    texts = [next(m["content"] for m in messages if m["role"] == "user")
             for messages in rows.column("messages").to_pylist()]
    model = load_for_eval(store.local_path(base_key, "files", "model"),
                          store.local_path(adapter_key, "files", "adapter") if adapter_key else None, precision)
    began = time.perf_counter()
    answers = generate_answers(model, tokenizer, texts, system=params.system, max_new_tokens=params.max_new_tokens,
                               temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                               batch_size=params.batch_size, precision=precision,
                               advance=ctx.progress(len(texts), "generate"))
    seconds = time.perf_counter() - began
    generator = adapter_key or base_key
    records = []
    for row, text, answer in zip(rows.to_pylist(), texts, answers):
        source = row["source"] or {}
        record = make_record(messages=[{"role": "user", "content": text},
                                       {"role": "assistant", "content": answer.text}],
                             system=params.system or None, uri=source.get("uri") or prompts.key,
                             fmt="generated", row=source.get("row") or 0,
                             meta={**json.loads(row["meta"] or "{}"), "generator": generator})
        records.append({**record, "prompt_id": row["id"], "finish_reason": answer.finish_reason,
                        "new_tokens": answer.new_tokens, "generator": generator})
    table = pa.Table.from_pylist(records, schema=GENERATION_SCHEMA)
    tokens = sum(a.new_tokens for a in answers)
    stats = {"model": generator, "base_model": base_key, "adapter": adapter_key, "prompts": prompts.key,
             "template": params.template or DEFAULT_TEMPLATE, **precision.stats(), "threads": threads,
             "rows": len(answers),
             "tokens": tokens, "seconds": round(seconds, 2),
             "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
             "finish_reasons": dict(Counter(a.finish_reason for a in answers)),
             "mean_answer_chars": round(sum(len(a.text) for a in answers) / len(answers), 1) if answers else 0}
    ctx.log.info("generate %s on %s: %d answers, %d new tokens in %.0f s (%.1f tokens/s, %s)", generator,
                 prompts.key, len(answers), tokens, seconds, stats["tokens_per_s"] or 0, precision.name)
    return StageOutput(table=table, stats=stats)


def gather(ctx: StageContext, **part: DatasetRef) -> StageOutput:
    """The parts' answers in order; their counts summed, the speed over all of them."""
    output = concat_parts(ctx, **part)
    stats, parts = output.stats, output.stats.get("parts", [])
    stats["finish_reasons"] = dict(sum((Counter(p.get("finish_reasons", {})) for p in parts), Counter()))
    stats["tokens_per_s"] = round(stats["tokens"] / stats["seconds"], 1) if stats.get("seconds") else None
    answered = [(p.get("rows", 0), p.get("mean_answer_chars", 0)) for p in parts]
    total = sum(n for n, _ in answered)
    stats["mean_answer_chars"] = round(sum(n * c for n, c in answered) / total, 1) if total else 0
    return output


def params_of(config: Any) -> GenerateConfig:
    """The config's generation settings, rendered as training rendered (format.template and format.system)."""
    own = config.generate
    return own.model_copy(update={"template": own.template or config.format.template,
                                  "system": own.system if own.system is not None else config.format.system})


def plan(config: Any) -> list[Call]:
    """One generation per prompt set, each reading its own set."""
    params = params_of(config)
    return [Call(params, label=f"generate[{entry.label}]", reads={"prompts": f"prompts[{entry.label}]"})
            for entry in config.generate.prompts]


STAGE = Stage("generate", "1", build, params=GenerateConfig, section="generate", output="generations",
              tags=("gpu", "model"), fingerprint=PRECISION.key, shard_input="prompts",
              part_rows=lambda p: p.part_rows or None, gather=gather, plan=plan,
              description="a model's answers to a prompt set, batched with the KV cache")
