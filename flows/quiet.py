"""Known-harmless lines of other libraries, silenced where they come from, so the terminal shows sftflow's own.

Each entry is one message of one module (never a whole category or library), with where it comes from and why it
does not matter here. `sftflow -v` does not call this and shows everything. The CLI calls it once at start; new
entries: run `sftflow run` (the demo) and look at what is not ours.
"""
from __future__ import annotations

import logging
import re
import warnings

# (category, start of the message, module the warning is attributed to) for warnings.filterwarnings
WARNINGS = [
    # torchmetrics 0.10 (pinned by unbabel-comet) imports pkg_resources, which setuptools 80 deprecates
    (UserWarning, r"pkg_resources is deprecated as an API", r"torchmetrics\.utilities\.imports"),
    # pytorch-lightning 2.6 builds torch 2.13's deprecated LeafSpec when it flattens a batch
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    # Lightning checks before our IQS metric's on_train_epoch_start puts the model in train mode (tasks/iqs/metric.py)
    (UserWarning, r"Found \d+ module\(s\) in eval mode at the start", r"pytorch_lightning\.loops\.fit_loop"),
]

# (logger, message pattern): log records of that logger whose message matches are dropped
LOG_LINES = [
    # COMET loads the bundled MiniLM as a BertModel: the checkpoint's pooler is not used by its encoder
    ("transformers.modeling_utils", r"Some weights of the model checkpoint at .* were not used when initializing"),
    # SmolLM2's tokenizer without a `legacy` setting: the legacy behaviour is the one the model was trained with
    ("transformers.models.llama.tokenization_llama_fast", r"You are using the default legacy behaviour of the"),
    # Lightning's Trainer (IQS training): device probing, an advert, the configured batch share, the stop reason
    ("pytorch_lightning.utilities.rank_zero", r"GPU available: |TPU available: |💡 Tip: .*litlogger|"
                                              r"`Trainer\(\w+=1(\.0)?\)` was configured so|"
                                              r"`Trainer\.fit` stopped: `max_epochs=\d+` reached"),
    # sentence-transformers says where it loads the bundled MiniLM from (embed stage, probe scorer) every time
    ("sentence_transformers.base.model", r"Loading SentenceTransformer model from "),
    # faiss tries its AVX-512 and AVX2 builds first and says so (faiss-cpu ships the build this CPU runs)
    ("faiss.loader", r"Loading faiss|Could not load library with AVX|Successfully loaded faiss"),
]

# loggers whose every INFO line is one HTTP request (the Prefect API, the hub cache) or one file lock
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "filelock")


class DropMatching(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def silence_third_party() -> None:
    for category, message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, pattern in LOG_LINES:
        logging.getLogger(name).addFilter(DropMatching(pattern))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
