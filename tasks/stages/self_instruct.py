"""`self_instruct`: seed tasks + requirements text → generated canonical records (+ quarantine), Alpaca's method.

Not a stage of sft-pipeline: the `self-instruct` flow (and `sftflow generate-instructions`) runs it, and its
output is a dataset the pipeline ingests like any other source."""
from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field

from storage.params import PATH, Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import Store
from tasks.calibrate import measured
from tasks.device import RESOLVED_IN_KEY, PrecisionSetting, PrecisionUse
from tasks.self_instruct.backends import make_backend
from tasks.self_instruct.generate import GenerationResult, Settings, generate_instructions
from tasks.self_instruct.plots import outcome_png
from tasks.self_instruct.prompt import default_prompt_file, load_seed_tasks, read_text
from tasks.self_instruct.records import export, generated_records, quarantine_table


class SelfInstructConfig(Section):
    """Self-instruct generation (`sftflow generate-instructions`, the `self-instruct` flow); not a pipeline stage:
    its output is a dataset in the store that the pipeline ingests like any other source."""

    seed_tasks: str = Field(description="seed tasks JSONL (Alpaca's seed_tasks.jsonl layout)", json_schema_extra=PATH)
    prompt_file: str | None = Field(None, description="the requirements text the tasks follow (Alpaca's "
                                                      "prompt.txt); prompt.txt next to seed_tasks when empty")
    backend: Literal["openai", "local"] = Field("openai", description="an OpenAI-compatible HTTP endpoint, or a "
                                                                      "local transformers model folder")
    base_url: str = Field("https://api.openai.com/v1", description="chat-completions endpoint base URL (openai)")
    model: str = Field("gpt-4o-mini", description="model name (openai) or a local Hugging Face model folder (local)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    api_key_secret: str | None = Field(None, description="Prefect Secret block holding the API key "
                                                                       "(the flow puts it into api_key_env)")
    num_instructions: int = Field(100, ge=1, description="stop once this many new instructions are kept")
    num_prompt_instructions: int = Field(3, ge=1, description="seed tasks shown in each prompt")
    request_batch_size: int = Field(5, ge=1, description="prompts per batch (concurrent HTTP requests, or one "
                                                         "generate call)")
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = Field(3072, ge=1, description="completion tokens per request")
    stop: list[str] = Field(default_factory=lambda: ["\n20", "20."], description="stop sequences (Alpaca's)")
    similarity_threshold: float = Field(0.7, description="drop an instruction whose ROUGE-L F1 to any earlier "
                                                         "one is above this")
    min_words: int = Field(4, description="drop instructions with fewer words")
    max_words: int = Field(150, description="drop instructions with more words")
    requests_budget: int | None = Field(200, description="at most this many requests (none: no limit)")
    tokens_budget: int | None = Field(None, description="stop starting requests once prompt + completion tokens "
                                                        "reach this (none: no limit)")
    seed: int = Field(42, description="seed for sampling prompt tasks (and local sampling)")
    timeout_s: float = Field(120.0, description="HTTP timeout per request")
    max_retries: int = Field(5, description="retries on 429, 5xx and connection errors")
    backoff_s: float = Field(1.0, description="first retry wait, doubled each time, unless the "
                                                            "server sends Retry-After")
    device: str = Field("auto", description="local backend: cpu, cuda or auto")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="local backend: auto = bf16 autocast where the GPU or the CPU has bf16 units, else fp32")


PRECISION = PrecisionUse(lambda p: p.precision if p.backend == "local" else None, "precision",
                         device=lambda p: p.device, measure=measured("lm-inference"))


def prompt_file(params: Any) -> str:
    return params.prompt_file or default_prompt_file(params.seed_tasks)


def fingerprint(params: Any) -> dict[str, str]:
    """The seed tasks and the requirements text are part of the key: edit them and the stage runs again; so is
    the precision a local model resolves to here."""
    found = {name: hashlib.sha256(read_text(path).encode()).hexdigest()
             for name, path in (("seed_tasks", params.seed_tasks), ("prompt_file", prompt_file(params)))}
    return {**found, **PRECISION.key(params)}


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
    backend = make_backend(params, PRECISION.planned(params, ctx.fingerprint) if params.backend == "local" else None)
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


STAGE = Stage("self_instruct", "1", build, params=SelfInstructConfig, output="generated", fingerprint=fingerprint,
              tags=("model",),
              retries=1, description="generate instruction data from seed tasks (Alpaca's self-instruct)")


def summary(store: Store, key: str, status: str, output: str | None = None) -> dict[str, Any]:
    """The counts of a stored self_instruct dataset, exported to `output` when set (see records.export)."""
    manifest = store.manifest(key)
    result = {"key": key, "status": status, "rows": manifest["rows"], **manifest.get("stats", {}),
              "quarantine": manifest.get("companions", {}).get("quarantine"), "store": store.url}
    if output:
        result["output"] = output
        result["output_layout"] = export(store.read_table(key), output)
    return result
