"""Other libraries' known-harmless lines are gone from the terminal of a real command, and `sftflow -v` shows them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# what a user saw on the terminal of `make demo` (the IQS training and its probe embeddings), one marker per line
TRAINING_NOISE = ["pkg_resources is deprecated as an API", "Some weights of the model checkpoint at",
                  "GPU available: False", "TPU available: False", "litlogger", "was configured so 100%",
                  "module(s) in eval mode at the start of training", "`isinstance(treespec, LeafSpec)` is deprecated",
                  "`Trainer.fit` stopped: `max_epochs=1` reached"]
# (the probe's embeddings come from the embed stage's own forward pass since embed v2: no SentenceTransformer
# loading line during training any more; its filter stays for the embed stage)
LOADER_NOISE = ["Loading faiss", "Successfully loaded faiss", "You are using the default legacy behaviour"]


def stderr_of(args: list[str], home) -> str:
    env = {**os.environ, "SFTFLOW_HOME": str(home)}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_iqs_training_shows_only_our_lines_unless_verbose(tmp_path):
    train = ["iqs", "train", "--revisions", "demo/revisions_demo.jsonl", "--json", "--set", "epochs=1",
             "--set", "nr_frozen_epochs=0", "--set", "hidden_sizes=[64]", "--set", "valid_fraction=0.25"]
    quiet = stderr_of(["-m", "flows", *train], tmp_path / "quiet")
    assert "iqs.train: published" in quiet and "iqs.train epoch 1:" in quiet
    assert [noise for noise in TRAINING_NOISE if noise in quiet] == [], quiet
    verbose = stderr_of(["-m", "flows", "-v", *train], tmp_path / "verbose")
    assert "iqs.train: published" in verbose
    assert [noise for noise in TRAINING_NOISE if noise not in verbose] == [], verbose


def test_faiss_loader_and_llama_tokenizer_lines(tmp_path, tiny_lm):
    """The loaders the cluster and base_model stages use, under the CLI's logging set-up."""
    script = ("import sys; from flows.cli import configure_logging; configure_logging(sys.argv[1] == '-v'); "
              "import faiss; from transformers import LlamaTokenizerFast; "
              "LlamaTokenizerFast(tokenizer_file=sys.argv[2]); "
              "import logging; logging.getLogger('faiss.loader').info('a line the filter does not know')")
    quiet = stderr_of(["-c", script, "-", str(tiny_lm / "tokenizer.json")], tmp_path)
    assert [noise for noise in LOADER_NOISE if noise in quiet] == [], quiet
    assert "faiss.loader: a line the filter does not know" in quiet  # by message, not the whole logger
    verbose = stderr_of(["-c", script, "-v", str(tiny_lm / "tokenizer.json")], tmp_path)
    assert [noise for noise in LOADER_NOISE if noise not in verbose] == [], verbose
