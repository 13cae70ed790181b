"""What a training run leaves behind besides the adapter: loss curve, model card (with the lineage of
tasks/provenance.py), merged model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.figures import png, subplots


def loss_curve_png(log_history: list[dict[str, Any]], title: str) -> bytes:

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = subplots(figsize=(6.4, 3.8), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (supervised tokens)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return png(fig)


def model_card(*, base: dict[str, Any], data_key: str, template: str, params: dict[str, Any],
               stats: dict[str, Any], upstream: list[dict[str, Any]]) -> str:
    selection = [u for u in upstream if u["stage"] == "select"]
    lines = [
        "---", "library_name: peft", f"base_model: {base.get('name') or base.get('reference')}", "tags: [sftflow, "
        f"{params['method']}, sft]", "---", "", f"# {params['method'].upper()} adapter trained by sftflow", "",
        f"- base model: `{base.get('name') or base.get('reference')}` from `{base.get('reference')}` "
        f"(store key `{base.get('key')}`, {base.get('model_type')})",
        f"- training data: store key `{data_key}` ({stats.get('train_rows')} training rows, "
        f"{stats.get('eval_rows')} held out)",
        f"- chat template: `{template}` (written into the tokenizer's `chat_template`; generate with "
        "`tokenizer.apply_chat_template(..., add_generation_prompt=True)`)",
        f"- selection: {json.dumps(selection[0]['params']) if selection else 'not found upstream'}"
        + (f" (key `{selection[0]['key']}`)" if selection else ""), "",
        "## Hyperparameters", "", "| parameter | value |", "|---|---|",
        *(f"| {k} | `{json.dumps(v)}` |" for k, v in sorted(params.items())), "",
        "## Results", "", "| metric | value |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in stats.items() if not isinstance(v, (dict, list))), "",
        "## Lineage", "", *(f"- `{u['stage']}` `{u['key']}`: {u['rows']} rows, params "
                            f"`{json.dumps(u['params'])[:300]}`" for u in upstream), "",
        "## Use", "", "```bash", "sftflow generate --model <this key> --prompt 'Your question'",
        "sftflow generate --model <this key> --prompt 'Your question' --no-adapter   # the base model, same template",
        "```", ""]
    return "\n".join(lines)


def merge_adapter(base_folder: Path, adapter_folder: Path, out: Path, tokenizer: Any) -> None:
    """Merge LoRA weights into a fresh full-precision copy of the base (also right for QLoRA adapters)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype="auto")
    merged = PeftModel.from_pretrained(base, adapter_folder).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def report_markdown(stats: dict[str, Any], template: str, data_key: str) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return "\n".join([
        f"# Training: {stats['method']} ({stats['device']}, {stats['precision']})", "",
        f"data `{data_key}`, template `{template}`", "",
        "| metric | value |", "|---|---:|", *(f"| {k} | {fmt(v)} |" for k, v in stats.items())])
