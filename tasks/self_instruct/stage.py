"""The `self_instruct` stage: seed tasks + requirements text → generated canonical records (+ quarantine)."""
from __future__ import annotations

import hashlib
from typing import Any

from storage.stage import StageContext, StageDef, StageOutput
from storage.store import Store
from tasks.self_instruct.backends import make_backend
from tasks.self_instruct.generate import GenerationResult, Settings, generate_instructions
from tasks.self_instruct.plots import outcome_png
from tasks.self_instruct.prompt import default_prompt_file, load_seed_tasks, read_text
from tasks.self_instruct.records import export, generated_records, quarantine_table


def prompt_file(params: Any) -> str:
    return params.prompt_file or default_prompt_file(params.seed_tasks)


def fingerprint(params: Any) -> dict[str, str]:
    """The seed tasks and the requirements text are part of the key: edit them and the stage runs again."""
    return {name: hashlib.sha256(read_text(path).encode()).hexdigest()
            for name, path in (("seed_tasks", params.seed_tasks), ("prompt_file", prompt_file(params)))}


def settings(params: Any) -> Settings:
    return Settings(**{name: getattr(params, name) for name in Settings.__dataclass_fields__})


def report(result: GenerationResult, backend: str, model: str) -> str:
    counts = result.counts()
    lines = [f"# self-instruct: {counts['kept']} new instructions", "",
             f"{backend} `{model}`: {counts['requests']} requests, {counts['prompt_tokens']:,} prompt + "
             f"{counts['completion_tokens']:,} completion tokens, {counts['retries']} retries; "
             f"stopped: {counts['stop_reason']}.", "",
             "| outcome | tasks |", "|---|---:|", f"| kept | {counts['kept']} |"]
    lines += [f"| dropped: {reason} | {n} |" for reason, n in counts["dropped"].items()]
    lines += ["", "`outcomes.png`: ROUGE-L to the most similar earlier instruction, and the outcome of every task."]
    if result.kept:
        lines += ["", "Examples:", ""] + [f"- {o.text}" for o in result.kept[:5]]
    return "\n".join(lines) + "\n"


def build(ctx: StageContext) -> StageOutput:
    params = ctx.params
    seed_tasks = load_seed_tasks(params.seed_tasks)
    requirements = read_text(prompt_file(params))
    backend = make_backend(params)
    ctx.log.info("self-instruct: %d seed tasks, %s backend, model %s", len(seed_tasks), backend.name, backend.model)
    advance = ctx.progress(params.num_instructions, "self-instruct")
    result = generate_instructions(seed_tasks, requirements, backend, settings(params), advance)
    counts = result.counts()
    return StageOutput(
        table=generated_records(result.kept, backend.name, backend.model),
        companions={"quarantine": quarantine_table(result.dropped)},
        files={"outcomes.png": outcome_png(result, params.similarity_threshold)},
        stats=counts,
        report=report(result, backend.name, backend.model),
    )


SELF_INSTRUCT_STAGE = StageDef(name="self_instruct", version="1", build=build, fingerprint=fingerprint)


def summary(store: Store, key: str, status: str, output: str | None = None) -> dict[str, Any]:
    """The counts of a stored self_instruct dataset, exported to `output` when set (see records.export)."""
    manifest = store.manifest(key)
    result = {"key": key, "status": status, "rows": manifest["rows"], **manifest.get("stats", {}),
              "quarantine": manifest.get("companions", {}).get("quarantine"), "store": store.url}
    if output:
        result["output"] = output
        result["output_layout"] = export(store.read_table(key), output)
    return result
