"""`train`: a peft adapter (LoRA, QLoRA, prefix tuning, P-tuning v2) on the tokenized selection (tasks/train/).

Inputs: `tokenized` (the format stage: id, input_ids, labels with -100 masks) and `base_model` (a plain model
folder). Bad input fails before the model is loaded. Checkpoints live in the stage's scratch folder (the same for
every attempt at one key), so a retried or killed run resumes from its last complete checkpoint.
Output files: adapter/, tokenizer/ (chat_template = the training template), merged/ (optional), README.md
(model card), loss_curve.png, log_history.json, samples.json and the markdown report. `Adapter.read` is what
later readers (generate, evaluate) know of how it was made (tasks/artifacts.py).
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import Requirement, Stage, StageContext, StageOutput, padding_share
from storage.store import DatasetRef
from tasks.artifacts import Tokenized
from tasks.calibrate import measured
from tasks.device import RESOLVED_IN_KEY, PrecisionSetting, PrecisionUse
from tasks.errors import BadInputError
from tasks.train.model import PROMPT_LEARNING

DEFAULT_SAMPLE_PROMPTS = [
    "Give three tips for staying healthy.",
    "What is the capital of France?",
    "Write a haiku about autumn.",
]


class TrainConfig(Section):
    base_model: str | None = Field(None, description="hub name or local path; SmolLM2-135M-Instruct when empty")
    method: Literal["lora", "qlora", "prefix", "ptuning"] = Field(
        "lora", description="lora; qlora (4-bit base, CUDA only); prefix (prefix tuning, MLP-reparameterised "
                            "prefixes); ptuning (P-tuning v2 as in ChatGLM-6B: deep prefixes, no reparameterisation)")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="LoRA target module names; found from the "
                                                               "architecture when empty")
    num_virtual_tokens: int = Field(32, ge=1, description="prefix length for prefix/ptuning (ChatGLM's pre_seq_len)")
    learning_rate: float | None = Field(None, gt=0, description="empty: 2e-4 for LoRA/QLoRA, 2e-2 for prefix/ptuning")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0, description="passes over the training rows when max_steps is empty")
    max_steps: int | None = Field(20, ge=1, description="optimizer steps; overrides epochs (empty: use epochs)")
    batch_size: int = Field(4, ge=1, description="rows per device step")
    grad_accumulation: int = Field(1, ge=1, description="device steps per optimizer step")
    micro_batch_rows: int | None = Field(None, ge=1, json_schema_extra=NOT_IN_KEY,
                                         description="rows whose activations are alive at once: a batch runs as "
                                                     "micro-batches of this many rows, the same step (empty: sized "
                                                     "from the memory budget)")
    max_length: int | None = Field(None, ge=8, description="truncate rows to this many tokens (empty: as formatted)")
    pack: bool = Field(False, description="pack several rows into one max_length sequence (needs max_length)")
    eval_share: float = Field(0.05, ge=0, lt=1, description="share of rows held out for eval loss")
    eval_max_rows: int = Field(200, ge=1, description="cap on held-out rows")
    eval_steps: int | None = Field(None, ge=1, json_schema_extra=NOT_IN_KEY, description="also evaluate every N steps "
                                                                         "(always before and after training)")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="auto: bf16 autocast on a GPU with bf16 and on a CPU with bf16 units (AMX-BF16, "
                    "AVX512-BF16), else fp32; the adapter's weights and optimizer state stay fp32")
    group_by_length: bool = Field(True, description="batches of rows of similar length (little padding); false: "
                                                    "random batches")
    merge: bool = Field(False, description="also store the merged model (merge_and_unload), LoRA/QLoRA only")
    seed: int = 42
    gradient_checkpointing: bool = Field(True, json_schema_extra=NOT_IN_KEY, description="on CUDA, for LoRA/QLoRA")
    save_steps: int = Field(10, ge=1, json_schema_extra=NOT_IN_KEY,
                            description="checkpoint every N steps (a retry resumes there)")
    sample_prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS),
                                      json_schema_extra=NOT_IN_KEY,
                                      description="answered before and after training in the report")
    sample_max_new_tokens: int = Field(64, ge=1, json_schema_extra=NOT_IN_KEY)


PRECISION = PrecisionUse(lambda p: p.precision, "train.precision", supports=("auto", "fp32", "bf16", "fp16"),
                         measure=measured("lm-training"))


def check_request(params: TrainConfig) -> None:
    if params.merge and params.method in PROMPT_LEARNING:
        raise BadInputError(f"merge needs LoRA weights; {params.method} adds virtual tokens, which cannot be "
                            "merged into the base model", field="train.merge")
    if params.pack and params.max_length is None:
        raise BadInputError("pack needs max_length (the packed sequence length)", field="train.max_length")
    if params.pack and params.method in PROMPT_LEARNING:
        raise BadInputError("packing is for LoRA/QLoRA: prefix methods need each row's attention mask",
                            field="train.pack")


def build(ctx: StageContext, tokenized: DatasetRef, base_model: DatasetRef) -> StageOutput:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from tasks.collate import SFTCollator
    from tasks.device import cpu_bf16_flags, use_available_cores
    from tasks.generate import answer, compare_markdown
    from tasks.provenance import lineage
    from tasks.templates import for_tokenizer, get_template
    from tasks.train.data import check_template, effective_limit, prepare
    from tasks.train.loop import fit
    from tasks.train.memory import micro_batch_rows
    from tasks.train.model import check_method, load_base, position_limit, trainable_parameters, wrap
    from tasks.train.outputs import loss_curve_png, merge_adapter, model_card, report_markdown

    params, store = ctx.params, ctx.store
    check_request(params)
    device = PRECISION.planned(params, ctx.fingerprint)
    check_method(params.method, device)
    threads = use_available_cores()
    data = Tokenized.read(store, tokenized.key)
    base_dir = store.local_path(base_model.key, "files", "model")
    config = AutoConfig.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    template = for_tokenizer(get_template(data.template), tokenizer)
    check_template(template, tokenizer, data.template)
    tokenizer.chat_template = template.chat_template()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    virtual = params.num_virtual_tokens if params.method in PROMPT_LEARNING else 0
    limit = effective_limit(params.max_length, position_limit(config), virtual)
    prepared = prepare(store.read_table(tokenized.key, columns=["id", "input_ids", "labels"]), source=tokenized.key,
                       vocab_size=config.vocab_size, limit=limit, truncate=params.max_length is not None,
                       eval_share=params.eval_share, eval_max_rows=params.eval_max_rows, seed=params.seed)
    ctx.log.info("train: %d training rows, %d held out, %s on %s (%s)", len(prepared.train), len(prepared.eval),
                 params.method, device.device, device.name)

    torch.manual_seed(params.seed)
    model = wrap(load_base(base_dir, params.method, device, params.gradient_checkpointing), params)
    trainable, total = trainable_parameters(model)
    collator = SFTCollator(tokenizer.pad_token_id, pack=params.pack, max_length=params.max_length)
    longest = params.max_length if params.pack else max(len(ids) for ids in prepared.train.input_ids)
    micro_rows, micro_reason = micro_batch_rows(params, config, device, longest, ctx.memory_gb)
    result = fit(model, collator, prepared, params, device, ctx.scratch / "checkpoints", ctx.progress,
                 micro_batch_rows=micro_rows)

    export = ctx.scratch / "export"
    model.save_pretrained(export / "adapter")
    tokenizer.save_pretrained(export / "tokenizer")
    files: dict[str, Any] = {"adapter": export / "adapter", "tokenizer": export / "tokenizer"}
    if params.merge:
        merge_adapter(base_dir, export / "adapter", export / "merged", tokenizer)
        files["merged"] = export / "merged"

    before = after = []
    if params.sample_prompts:
        kwargs = {"max_new_tokens": params.sample_max_new_tokens, "system": data.system, "precision": device}
        with model.disable_adapter():
            before = answer(model, tokenizer, params.sample_prompts, **kwargs)
        after = answer(model, tokenizer, params.sample_prompts, **kwargs)

    history = ([{"step": 0, "eval_loss": result.eval_loss_before}] if result.eval_loss_before is not None else []) \
        + result.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    stats = {**prepared.stats, "method": params.method, "device": device.device, "precision": device.name,
             "precision_reason": device.reason, "cpu_bf16_flags": list(cpu_bf16_flags()), "threads": threads,
             "micro_batch_rows": micro_rows, "micro_batch_reason": micro_reason,
             "padded_tokens": result.padded_tokens, "padding_share": padding_share(result.tokens, result.padded_tokens),
             "steps": result.steps, "resumed_from_step": result.resumed_from_step,
             "counted_from_step": result.counted_from_step,
             "trainable_parameters": trainable, "total_parameters": total,
             "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
             "eval_loss_before": result.eval_loss_before, "eval_loss_after": result.eval_loss_after,
             "train_seconds": round(result.seconds, 2), "tokens_seen": result.tokens,
             "tokens_per_second": round(result.tokens / result.seconds, 1) if result.seconds else None}
    base_facts = {**store.manifest(base_model.key).get("stats", {}), "key": base_model.key}
    card = model_card(base=base_facts, data_key=tokenized.key, template=data.template,
                      params=params.model_dump(mode="json"), stats=stats, upstream=lineage(store, tokenized.key))
    files.update({"README.md": card,
                  "loss_curve.png": loss_curve_png(history, f"{params.method} on {base_facts.get('model_type')}"),
                  "log_history.json": json.dumps(history, indent=1),
                  "samples.json": json.dumps({"before": before, "after": after}, indent=1, ensure_ascii=False)})
    report = report_markdown(stats, data.template, tokenized.key)
    if before:
        report += "\n\n" + compare_markdown(before, after)
    return StageOutput(files=files, stats=stats, companions={"quarantine": prepared.quarantine}, report=report)


STAGE = Stage("train", "1", build, params=TrainConfig, section="train", output="adapter", tags=("gpu", "model"),
              fingerprint=PRECISION.key,
              requires=(Requirement("peft", "pip install peft"),),
              description="a peft adapter (LoRA, QLoRA, prefix, p-tuning v2) on the tokenized selection")
