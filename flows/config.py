"""The one typed configuration shared by the CLI, the flow parameters and the deployments.

Each stage reads its own section; a section is also the stage's cache-key parameters, so a field that does
not change the stage's output (a batch size, a device) is marked `json_schema_extra=NOT_IN_KEY` to stay out of
the key. Not pydantic's `exclude=True`: Prefect serializes flow parameters with model_dump, which drops those.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.stage import NOT_IN_KEY
from tasks.errors import BadInputError

STAGES = ("ingest", "iqs", "embed", "cluster", "select", "format", "train")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Section):
    path: str = Field(description="File path, fsspec URL, or hf:NAME[:CONFIG][@REVISION]")
    format: str | None = Field(None, description="alpaca, sharegpt, openai, guanaco, xtuner, self-instruct, "
                                                 "oasst1, oasst-trees, canonical, medicationqa, columns; detected "
                                                 "when empty")
    sheet: str | None = Field(None, description="xlsx sheet name")
    split: str | None = Field(None, description="dataset split for hf: sources")
    mapping: dict[str, str] | None = Field(None, description="table columns (xlsx, csv, parquet, JSON): "
                                                              "system/input/output -> header")
    system_prompt: str | None = Field(None, description="system prompt for records that have none "
                                                        "(medicationqa: the seed's doctor prompt)")
    repair: bool = Field(True, description="drop leading assistant turns, merge consecutive same-role turns, read "
                                           "chatgpt/bing/bard/model as assistant (each repair counted); false: "
                                           "quarantine such conversations")
    lang: list[str] | None = Field(None, description="keep only conversations whose lang (OpenAssistant, or a lang "
                                                     "column) is one of these; those without a lang are kept")
    preference: Literal["chosen"] | None = Field(None, description="preference records (chosen/rejected): chosen "
                                                                   "takes the chosen answer; empty: quarantine them")

    @field_validator("lang", mode="before")
    @classmethod
    def _lang_list(cls, value: Any) -> Any:
        """`lang: en` or `lang: en,de` as well as a list."""
        return [code.strip() for code in value.split(",") if code.strip()] if isinstance(value, str) else value


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list)

    @field_validator("sources", mode="before")
    @classmethod
    def _paths_as_sources(cls, value: Any) -> Any:
        """A plain string is a source given by its path alone: `sources: [data.json, sheet.xlsx]`."""
        return [{"path": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


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
    length_grouped: bool = Field(True, description="training batches of similar length (about half the padding); "
                                 "false: random batches, as stock COMET")
    seed: int = 42
    probe_c: float = Field(1.0, gt=0, description="inverse regularization of the probe's logistic regression")
    batch_size: int = Field(32, ge=1, json_schema_extra=NOT_IN_KEY, description="scoring batch size")

    def comet_hparams(self) -> dict[str, Any]:
        """InstructionMetric arguments (pretrained_model None = the bundled MiniLM)."""
        return {"encoder_model": self.encoder_model, "pretrained_model": self.encoder,
                "encoder_learning_rate": self.encoder_learning_rate, "learning_rate": self.learning_rate,
                "layerwise_decay": self.layerwise_decay, "nr_frozen_epochs": self.nr_frozen_epochs,
                "hidden_sizes": list(self.hidden_sizes), "dropout": self.dropout, "pool": self.pool,
                "layer_transformation": self.layer_transformation, "batch_size": self.train_batch_size,
                "pair_loss_weight": self.pair_loss_weight, "pair_margin": self.pair_margin,
                "length_grouped": self.length_grouped}


class EmbedConfig(Section):
    model: str | None = Field(
        None, description="sentence-transformers model: local folder or hub name; the bundled all-MiniLM-L6-v2 when "
                          "empty. Its name and a checksum of its files are part of the cache key")
    text: Literal["car", "user", "full"] = Field(
        "car", description="what is embedded: car = CaR's 'Instruction: … Input: … Response: …' (multi-turn: "
                           "turns with role names), user = the user turns, full = system prompt and every turn")
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "fp32", description="fp32: exact; bf16: bfloat16 autocast (CPUs with AVX512-BF16/AMX, GPUs), cosine to "
                            "fp32 above 0.9999; int8: dynamic int8 quantization of the Linear layers (CPU only), "
                            "mean cosine to fp32 0.99; its activation scales are per batch, so vectors "
                            "vary slightly with batch_size")
    batch_size: int | None = Field(None, ge=1, json_schema_extra=NOT_IN_KEY,
                                   description="texts per forward pass; 16 on CPU, 128 on a GPU when empty")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=NOT_IN_KEY,
                                                   description="auto: cuda when available")


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
    device: Literal["auto", "cpu", "gpu"] = Field("auto", json_schema_extra=NOT_IN_KEY,
                                                  description="auto: gpu when faiss sees one")


class SelectConfig(Section):
    n1: int = Field(1000, ge=0, description="take the n1 rows with the highest IQS score")
    n2: int = Field(1, ge=0, description="then the n2 best of every cluster that are not already taken")
    budget: int | None = Field(None, ge=1, description="total rows: n1 becomes the largest value whose selection "
                                                       "(with the cluster rows) fits")


class FormatConfig(Section):
    template: str = Field("chatml", description="prompt template (`sftflow templates list`); `tokenizer` uses the "
                                                "base model's own chat_template")
    max_length: int = Field(1024, ge=8, description="tokens kept per sample; samples whose answer starts later "
                                                    "are quarantined")
    train_on: Literal["all_assistant", "last_assistant", "prompt"] = Field(
        "all_assistant", description="loss on every assistant turn, on the last one only, or on every token")
    system: str | None = Field(None, description="system prompt for every sample (replaces the records' own and "
                                                 "the template default); empty string: no system prompt")
    exports: list[Literal["text", "xtuner", "llamafactory"]] = Field(
        default_factory=lambda: ["text", "xtuner", "llamafactory"],
        description="files written next to the tokenized table: formatted text JSONL, xtuner conversation "
                    "JSONL, LLaMA-Factory dataset folder")
    dataset_name: str = Field("sftflow", description="dataset name in the LLaMA-Factory dataset_info.json")
    batch_size: int = Field(2000, ge=1, json_schema_extra=NOT_IN_KEY, description="rows tokenized per batch")


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
    eval_steps: int | None = Field(None, ge=1, json_schema_extra=NOT_IN_KEY, description="also evaluate every N steps "
                                                                         "(always before and after training)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 (or fp16) on CUDA, fp32 on CPU")
    merge: bool = Field(False, description="also store the merged model (merge_and_unload), LoRA/QLoRA only")
    seed: int = 42
    gradient_checkpointing: bool = Field(True, json_schema_extra=NOT_IN_KEY, description="on CUDA, for LoRA/QLoRA")
    save_steps: int = Field(10, ge=1, json_schema_extra=NOT_IN_KEY,
                            description="checkpoint every N steps (a retry resumes there)")
    sample_prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS),
                                      json_schema_extra=NOT_IN_KEY,
                                      description="answered before and after training in the report")
    sample_max_new_tokens: int = Field(64, ge=1, json_schema_extra=NOT_IN_KEY)


class RunnerConfig(Section):
    task_runner: Literal["thread", "dask", "ray"] = "thread"
    address: str | None = Field(None, description="address of an existing Dask/Ray cluster")
    workers: int = 2


class SelfInstructConfig(Section):
    """Self-instruct generation (`sftflow generate-instructions`, the `self-instruct` flow); not a pipeline stage:
    its output is a dataset in the store that the pipeline ingests like any other source."""

    seed_tasks: str = Field(description="seed tasks JSONL (Alpaca's seed_tasks.jsonl layout)")
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
        raise BadInputError(f"--set expects key=value, got {text!r}", field="--set")
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
                raise BadInputError(f"--set {text!r}: {part!r} is not a section", field="--set")
        node[path[-1]] = value
    return data


def _resolved(folder: Path, path: str) -> str:
    """A relative local path resolved against the config file's folder; URLs, hf: ids and absolute paths as is."""
    if not path or "://" in path or path.startswith("hf:") or Path(path).is_absolute():
        return path
    return str((folder / path).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """A config from YAML (relative source paths resolved against the YAML's folder) plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BadInputError(f"not valid YAML: {exc}", file=str(path)) from None
        if not isinstance(data, dict):
            raise BadInputError(f"expected sections ({', '.join(STAGES)}, ...), found {type(data).__name__}",
                                file=str(path))
        ingest, iqs = data.get("ingest"), data.get("iqs")
        if isinstance(ingest, dict) and isinstance(ingest.get("sources"), list):
            ingest["sources"] = IngestConfig._paths_as_sources(ingest["sources"])
            for source in ingest["sources"]:
                if isinstance(source, dict) and isinstance(source.get("path"), str):
                    source["path"] = _resolved(path.parent, source["path"])
        for key in ("revisions", "validation_revisions"):
            if isinstance(iqs, dict) and isinstance(iqs.get(key), list):
                iqs[key] = [_resolved(path.parent, p) if isinstance(p, str) else p for p in iqs[key]]
    try:
        return PipelineConfig.model_validate(apply_overrides(data, overrides or []))
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])), f"{e['msg']} (got {repr(e['input'])[:60]})") for e in exc.errors()]
        single = len(problems) == 1  # then the error's field names the place
        raise BadInputError(problems[0][1] if single else "; ".join(f"{loc}: {what}" for loc, what in problems),
                            file=str(path) if path is not None else None, field=problems[0][0] if single else None
                            ) from None
