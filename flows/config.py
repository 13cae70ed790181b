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
    """Instruction Quality Scorer (CaR's ranking half). Training defaults follow CaR's instruction_score.yaml
    except the encoder (the bundled MiniLM, offline) and its learning rate (3e-5: better on MiniLM)."""

    scorer: Literal["comet", "probe", "none"] = Field(
        "comet", description="comet: CaR's COMET regression model; probe: logistic regression on the embed "
                             "stage's MiniLM embeddings (almost free); none: no IQS scores")
    model: str | None = Field(None, description="store key of a trained IQS model; trained from `revisions` if empty")
    revisions: list[str] = Field(default_factory=list, description="revision files to train an IQS model on: "
                                 "expert revision JSON/JSONL records or CaR src,score CSV pairs")
    validation_revisions: list[str] = Field(default_factory=list, description="validation pairs; when empty, "
                                            "valid_fraction of the revision pairs, split by a hash of their text")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="share of pairs held out when no validation files")
    min_distance: int = Field(200, ge=0, description="drop revisions closer than this edit distance (CaR: 200)")
    filter_prepared_pairs: bool = Field(False, description="apply min_distance to src,score CSVs too (CaR's "
                                        "published CSVs are prepared training data, half under 200 apart)")
    normalize_whitespace: bool = Field(True, description="collapse whitespace runs in training and scoring "
                                       "(raw CaR responses never contain a newline; revisions mostly do)")
    encoder: str | None = Field(None, description="local path or hub name of the encoder; bundled MiniLM if empty")
    encoder_model: str = Field("BERT", description="COMET encoder class: BERT (MiniLM), XLM-RoBERTa (CaR), ...")
    epochs: int = Field(3, ge=1, description="maximum epochs (early stopping on validation pairwise accuracy)")
    patience: int = Field(1, ge=0, description="epochs without improvement before stopping")
    limit_train_batches: int | float = Field(1.0, gt=0, description="share (float) or number (int) of training "
                                             "batches per epoch, for quick runs")
    train_batch_size: int = Field(8, ge=1)
    accumulate_grad_batches: int = Field(2, ge=1)
    encoder_learning_rate: float = Field(3e-5, gt=0, description="CaR: 1e-6 (xlm-roberta-large)")
    learning_rate: float = Field(1.5e-5, gt=0)
    layerwise_decay: float = 0.95
    nr_frozen_epochs: float = Field(0.3, ge=0, description="epochs (or share of the first) with a frozen encoder")
    hidden_sizes: list[int] = Field(default_factory=lambda: [2048, 1024])
    dropout: float = 0.1
    pool: Literal["avg", "max", "cls", "default"] = "avg"
    layer_transformation: Literal["sparsemax", "softmax"] = "sparsemax"
    pair_loss_weight: float = Field(0.0, ge=0, description="weight of a pairwise margin ranking loss added to MSE")
    pair_margin: float = Field(0.5, ge=0)
    seed: int = 42
    probe_c: float = Field(1.0, gt=0, description="inverse regularization of the probe's logistic regression")
    batch_size: int = Field(32, ge=1, exclude=True, description="scoring batch size")

    def comet_hparams(self) -> dict[str, Any]:
        """InstructionMetric arguments (pretrained_model None = the bundled MiniLM)."""
        return {"encoder_model": self.encoder_model, "pretrained_model": self.encoder,
                "encoder_learning_rate": self.encoder_learning_rate, "learning_rate": self.learning_rate,
                "layerwise_decay": self.layerwise_decay, "nr_frozen_epochs": self.nr_frozen_epochs,
                "hidden_sizes": list(self.hidden_sizes), "dropout": self.dropout, "pool": self.pool,
                "layer_transformation": self.layer_transformation, "batch_size": self.train_batch_size,
                "pair_loss_weight": self.pair_loss_weight, "pair_margin": self.pair_margin}


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
        for key in ("revisions", "validation_revisions"):
            items = data.get("iqs", {}).get(key) or []
            data.setdefault("iqs", {})[key] = [
                str((path.parent / p).resolve()) if "://" not in p and not Path(p).is_absolute() else p for p in items
            ]
    return PipelineConfig.model_validate(apply_overrides(data, overrides or []))
