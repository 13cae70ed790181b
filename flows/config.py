"""The one typed configuration shared by the CLI, the flow parameters and the deployments.

Each stage reads its own section; a section is also the stage's cache-key parameters, so a field that does
not change the stage's output (a batch size, a device) is marked `exclude=True` to stay out of the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

STAGES = ("ingest", "iqs", "embed", "cluster", "select", "format", "train")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Section):
    path: str = Field(description="File path, fsspec URL, or hf:NAME[:CONFIG][@REVISION]")
    format: str | None = Field(None, description="alpaca, sharegpt, openai, guanaco, xtuner, self-instruct, "
                                                 "oasst1, medicationqa, xlsx; detected when empty")
    sheet: str | None = Field(None, description="xlsx sheet name")
    split: str | None = Field(None, description="dataset split for hf: sources")
    mapping: dict[str, str] | None = Field(None, description="xlsx columns: system/input/output -> header")


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list)


class IQSConfig(Section):
    scorer: Literal["comet", "probe", "none"] = "comet"
    model: str | None = Field(None, description="store key of a trained IQS model; trained from `revisions` if empty")
    revisions: list[str] = Field(default_factory=list, description="revision files to train an IQS model on")


class EmbedConfig(Section):
    model: str | None = Field(
        None, description="sentence-transformers model: local folder or hub name; the bundled all-MiniLM-L6-v2 when "
                          "empty. Its name and a checksum of its files are part of the cache key")
    text: Literal["car", "user", "full"] = Field(
        "car", description="what is embedded: car = CaR's 'Instruction: … Input: … Response: …' (multi-turn: "
                           "turns with role names), user = the user turns, full = system prompt and every turn")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: bfloat16 autocast, about 1.7x faster on CPUs with AVX512-BF16/AMX and on GPUs; "
                            "cosine to fp32 above 0.9999")
    batch_size: int | None = Field(None, ge=1, exclude=True,
                                   description="texts per forward pass; 16 on CPU, 128 on a GPU when empty")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", exclude=True, description="auto: cuda when available")


class ClusterConfig(Section):
    pca_variance: float = Field(0.95, gt=0, le=1, description="PCA keeps the fewest components explaining this "
                                                              "share of the variance (CaR: 0.95)")
    pca_components: int | None = Field(None, ge=1, description="a fixed number of PCA components instead")
    k: int | None = Field(None, ge=1, description="number of clusters; int(sqrt(n/2)) when empty (CaR)")
    seed: int = 42
    niter: int = Field(10, ge=1, description="k-means (Lloyd) iterations; after k-means++ seeding 10 reach "
                                            "what 20 do (benchmarks/cluster.py)")
    init: Literal["kmeans++", "random"] = Field(
        "kmeans++", description="kmeans++: greedy k-means++ seeding (as sklearn/CaR) on a sample of 50 points per "
                                "cluster; random: faiss's random seeding")
    max_points_per_centroid: int | None = Field(
        128, ge=1, description="faiss trains on at most k times this many sampled points (every row is then "
                               "assigned); empty (null): train on every point, as CaR's sklearn run")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", exclude=True, description="auto: gpu when faiss sees one")


class SelectConfig(Section):
    n1: int = Field(1000, ge=0, description="take the n1 rows with the highest IQS score")
    n2: int = Field(1, ge=0, description="then the n2 best of every cluster that are not already taken")
    budget: int | None = Field(None, ge=1, description="total rows: n1 becomes the largest value whose selection "
                                                       "(with the cluster rows) fits")


class FormatConfig(Section):
    template: str = "chatml"
    max_length: int = 1024


class TrainConfig(Section):
    base_model: str | None = Field(None, description="hub name or local path; SmolLM2-135M-Instruct when empty")
    method: Literal["lora", "qlora", "prefix", "ptuning"] = "lora"
    max_steps: int = 20


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
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
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
