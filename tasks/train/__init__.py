"""The train stage: a peft adapter (LoRA, QLoRA, prefix tuning, P-tuning v2) on the tokenized selection.

Inputs: `tokenized` (the format stage: id, input_ids, labels with -100 masks; its manifest names the template)
and `base_model` (a plain model folder). Bad input fails before the model is loaded. Checkpoints live in
$SFTFLOW_HOME/work/<key>/checkpoints, so a retried or killed run resumes from its last complete checkpoint.
Output files: adapter/, tokenizer/ (chat_template = the training template), merged/ (optional), README.md
(model card), loss_curve.png, log_history.json, samples.json and the markdown report.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from flows.settings import sftflow_home
from storage.stage import StageContext, StageDef, StageOutput
from storage.store import DatasetRef
from tasks.errors import BadInputError
from tasks.train.data import check_template, effective_limit, prepare
from tasks.train.loop import CountingCollator, discard_incomplete_checkpoints, fit, latest_checkpoint
from tasks.train.model import PROMPT_LEARNING, load_base, pick_device, position_limit, trainable_parameters, wrap
from tasks.train.outputs import lineage, loss_curve_png, merge_adapter, model_card

__all__ = ["STAGE", "CountingCollator", "discard_incomplete_checkpoints", "latest_checkpoint", "work_folder"]


def work_folder(key: str) -> Path:
    return sftflow_home() / "work" / key


def training_template(store: Any, tokenized: DatasetRef) -> str:
    name = (store.manifest(tokenized.key).get("params") or {}).get("template")
    if not name:
        raise BadInputError("the tokenized data set's manifest names no template", file=tokenized.key,
                            field="params.template")
    return name


def check_request(params: Any) -> None:
    if params.merge and params.method in PROMPT_LEARNING:
        raise BadInputError(f"merge needs LoRA weights; {params.method} adds virtual tokens, which cannot be "
                            "merged into the base model", field="train.merge")
    if params.pack and params.max_length is None:
        raise BadInputError("pack needs max_length (the packed sequence length)", field="train.max_length")
    if params.pack and params.method in PROMPT_LEARNING:
        raise BadInputError("packing is for LoRA/QLoRA: prefix methods need each row's attention mask",
                            field="train.pack")


def build(ctx: StageContext, tokenized: DatasetRef, base_model: DatasetRef) -> StageOutput:
    from transformers import AutoConfig, AutoTokenizer

    from tasks.collate import SFTCollator
    from tasks.templates import for_tokenizer, get_template

    params, store = ctx.params, ctx.store
    check_request(params)
    device = pick_device(params.method, params.precision)
    template_name = training_template(store, tokenized)
    base_dir = store.local_path(base_model.key, "files", "model")
    config = AutoConfig.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    template = for_tokenizer(get_template(template_name), tokenizer)
    check_template(template, tokenizer, template_name)
    tokenizer.chat_template = template.chat_template()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    virtual = params.num_virtual_tokens if params.method in PROMPT_LEARNING else 0
    limit = effective_limit(params.max_length, position_limit(config), virtual)
    prepared = prepare(store.read_table(tokenized.key, columns=["id", "input_ids", "labels"]), source=tokenized.key,
                       vocab_size=config.vocab_size, limit=limit, truncate=params.max_length is not None,
                       eval_share=params.eval_share, eval_max_rows=params.eval_max_rows, seed=params.seed)
    ctx.log.info("train: %d training rows, %d held out, %s on %s (%s)", len(prepared.train), len(prepared.eval),
                 params.method, device.kind, device.precision)

    import torch

    torch.manual_seed(params.seed)
    model = wrap(load_base(base_dir, params.method, device, params.gradient_checkpointing), params)
    trainable, total = trainable_parameters(model)
    work = work_folder(ctx.key)
    collator = SFTCollator(tokenizer.pad_token_id, pack=params.pack, max_length=params.max_length)
    result = fit(model, collator, prepared, params, device, work / "checkpoints", ctx.progress)

    export = work / "export"
    shutil.rmtree(export, ignore_errors=True)
    model.save_pretrained(export / "adapter")
    tokenizer.save_pretrained(export / "tokenizer")
    files: dict[str, Any] = {"adapter": export / "adapter", "tokenizer": export / "tokenizer"}
    if params.merge:
        merge_adapter(base_dir, export / "adapter", export / "merged", tokenizer)
        files["merged"] = export / "merged"

    before = after = []
    if params.sample_prompts:
        from tasks.generate import answer, compare_markdown, training_system_prompt

        kwargs = {"max_new_tokens": params.sample_max_new_tokens,
                  "system": training_system_prompt(store, tokenized.key)}
        with model.disable_adapter():
            before = answer(model, tokenizer, params.sample_prompts, **kwargs)
        after = answer(model, tokenizer, params.sample_prompts, **kwargs)

    history = ([{"step": 0, "eval_loss": result.eval_loss_before}] if result.eval_loss_before is not None else []) \
        + result.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    stats = {**prepared.stats, "method": params.method, "device": device.kind, "precision": device.precision,
             "steps": result.steps, "resumed_from_step": result.resumed_from_step,
             "trainable_parameters": trainable, "total_parameters": total,
             "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
             "eval_loss_before": result.eval_loss_before, "eval_loss_after": result.eval_loss_after,
             "train_seconds": round(result.seconds, 2), "tokens_seen": result.tokens,
             "tokens_per_second": round(result.tokens / result.seconds, 1) if result.seconds else None}
    base_manifest = store.manifest(base_model.key)
    base_facts = {**base_manifest.get("stats", {}), "key": base_model.key}
    hyper = params.model_dump(mode="json")
    card = model_card(base=base_facts, data_key=tokenized.key, template=template_name, params=hyper, stats=stats,
                      upstream=lineage(store, tokenized.key))
    files.update({"README.md": card, "loss_curve.png": loss_curve_png(history, f"{params.method} on "
                                                                              f"{base_facts.get('model_type')}"),
                  "log_history.json": json.dumps(history, indent=1),
                  "samples.json": json.dumps({"before": before, "after": after}, indent=1, ensure_ascii=False)})
    report = report_markdown(stats, template_name, tokenized.key)
    if before:
        report += "\n\n" + compare_markdown(before, after)
    from tasks.base_model import scratch_output

    output = StageOutput(files=files, stats=stats, companions={"quarantine": prepared.quarantine}, report=report)
    return scratch_output(work, output)  # checkpoints go once the artifact is published


def report_markdown(stats: dict[str, Any], template: str, data_key: str) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return "\n".join([
        f"# Training: {stats['method']} ({stats['device']}, {stats['precision']})", "",
        f"data `{data_key}`, template `{template}`; loss curve: `files/loss_curve.png`", "",
        "| metric | value |", "|---|---:|", *(f"| {k} | {fmt(v)} |" for k, v in stats.items())])


STAGE = StageDef(name="train", version="1", build=build)
