"""The one typed configuration shared by the CLI, the flow parameters and the deployments.

Each stage reads its own section; a section is also the stage's cache-key parameters, so a field that does
not change the stage's output (a batch size, a device) is marked `exclude=True` to stay out of the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

STAGES = ("ingest", "iqs", "cluster", "select", "format", "train")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Section):
    path: str = Field(description="File path, fsspec URL, or hf:NAME[:CONFIG][@REVISION]")
    format: str | None = Field(None, description="alpaca, sharegpt, openai, guanaco, xtuner, self-instruct, "
                                                 "oasst1, canonical, medicationqa, columns; detected when empty")
    sheet: str | None = Field(None, description="xlsx sheet name")
    split: str | None = Field(None, description="dataset split for hf: sources")
    mapping: dict[str, str] | None = Field(None, description="table columns (xlsx, csv, parquet, JSON): "
                                                              "system/input/output -> header")
    system_prompt: str | None = Field(None, description="system prompt for records that have none "
                                                        "(medicationqa: the seed's doctor prompt)")


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list)


class IQSConfig(Section):
    scorer: Literal["comet", "probe", "none"] = "comet"
    model: str | None = Field(None, description="store key of a trained IQS model; trained from `revisions` if empty")
    revisions: list[str] = Field(default_factory=list, description="revision files to train an IQS model on")


class ClusterConfig(Section):
    embedding_model: str | None = Field(None, description="local path or hub name; the bundled MiniLM when empty")
    pca_variance: float = 0.95
    pca_components: int | None = None
    k: int | None = Field(None, description="number of clusters; int(sqrt(n/2)) when empty")
    seed: int = 42
    niter: int = 20


class SelectConfig(Section):
    n1: int = 1000
    n2: int = 1
    budget: int | None = None


class FormatConfig(Section):
    template: str = "chatml"
    max_length: int = 1024


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
    max_length: int | None = Field(None, ge=8, description="truncate rows to this many tokens (empty: as formatted)")
    pack: bool = Field(False, description="pack several rows into one max_length sequence (needs max_length)")
    eval_share: float = Field(0.05, ge=0, lt=1, description="share of rows held out for eval loss")
    eval_max_rows: int = Field(200, ge=1, description="cap on held-out rows")
    eval_steps: int | None = Field(None, ge=1, exclude=True, description="also evaluate every N steps "
                                                                         "(always before and after training)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 (or fp16) on CUDA, fp32 on CPU")
    merge: bool = Field(False, description="also store the merged model (merge_and_unload), LoRA/QLoRA only")
    seed: int = 42
    gradient_checkpointing: bool = Field(True, exclude=True, description="on CUDA, for LoRA/QLoRA")
    save_steps: int = Field(10, ge=1, exclude=True, description="checkpoint every N steps (a retry resumes there)")
    sample_prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS), exclude=True,
                                      description="answered before and after training in the report")
    sample_max_new_tokens: int = Field(64, ge=1, exclude=True)


class RunnerConfig(Section):
    task_runner: Literal["thread", "dask", "ray"] = "thread"
    address: str | None = Field(None, description="address of an existing Dask/Ray cluster")
    workers: int = 2


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("sftflow", description="data set name, used in flow run names")
    store: str | None = Field(None, description="store URL; $SFTFLOW_HOME/store when empty")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    iqs: IQSConfig = Field(default_factory=IQSConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    format: FormatConfig = Field(default_factory=FormatConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)


def parse_assignment(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    return dotted.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` assignments (values parsed as YAML) to a nested dict."""
    for text in assignments:
        path, value = parse_assignment(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """A config from YAML (relative source paths resolved against the YAML's folder) plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        for source in data.get("ingest", {}).get("sources", []) or []:
            src = source.get("path", "")
            if src and "://" not in src and not src.startswith("hf:") and not Path(src).is_absolute():
                source["path"] = str((path.parent / src).resolve())
        for key in ("revisions",):
            items = data.get("iqs", {}).get(key) or []
            data.setdefault("iqs", {})[key] = [
                str((path.parent / p).resolve()) if "://" not in p and not Path(p).is_absolute() else p for p in items
            ]
    return PipelineConfig.model_validate(apply_overrides(data, overrides or []))
