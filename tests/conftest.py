"""Test settings: an isolated SFTFLOW_HOME per session, a real Prefect API when a test asks for one, a local S3 API
(moto's server) with the bucket `sftflow-test`."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ["SFTFLOW_HOME"] = tempfile.mkdtemp(prefix="sftflow-test-")
atexit.register(shutil.rmtree, os.environ["SFTFLOW_HOME"], ignore_errors=True)  # the session's home goes with it
# one calibration of `precision: auto` for the session, shared by the CLI processes tests start with homes of their own
os.environ["SFTFLOW_CALIBRATION_DIR"] = os.path.join(os.environ["SFTFLOW_HOME"], "calibration")
# the named prompt sets and AlpacaEval's verdicts are read from the shared data (never from the network)
os.environ["SFTFLOW_PROMPT_SETS"] = str(SHARED_DATA)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("SFTFLOW_FAIL_STAGE", None)

from flows.settings import configure_environment  # noqa: E402

configure_environment()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect server for the whole session (about 15-20 s once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny Llama-architecture causal LM with a BPE tokenizer trained on the fly (ChatML template)."""
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_confident_lm(tiny_lm, tmp_path_factory) -> Path:
    """The tiny Llama with 8x larger (tied) embeddings: at the default 0.02 init its logits stay so flat that
    no adapter can lower the loss by more than about 0.1 nats, which makes "the loss drops" a weak test, and
    every token costs about log V, which hides a token scored at the wrong position."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-confident-lm")
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder)
    return folder


@pytest.fixture
def store(tmp_path):
    from storage.store import Store

    return Store(str(tmp_path / "store"))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for UI tests (tests/browser.py): skipped without it, except in CI."""
    from tests.browser import require_chromium

    return require_chromium()


@pytest.fixture(scope="session")
def s3_endpoint():
    """One server for the session: s3fs caches its filesystems, with the endpoint they were made with."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the local S3 API, its credentials in the environment, and the bucket sftflow-test."""
    import fsspec

    pytest.importorskip("s3fs")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", s3_endpoint)):
        monkeypatch.setenv(name, value)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("sftflow-test")
    yield fs
    fs.rm("sftflow-test", recursive=True)


@pytest.fixture
def ablation_config(tmp_path, shared_data, tiny_lm):
    """60 Alpaca rows, the length scorer as the 'IQS' (so car and top_score run without a trained model), the
    tiny LM, two training steps; one more evaluation set from a file."""
    from tests.pipeline_runs import pipeline_config, write_sources

    sources = write_sources(shared_data, tmp_path / "sources")
    extra = json.loads((shared_data / "llama-factory" / "alpaca_en_demo.json").read_text())[100:110]
    (tmp_path / "extra.json").write_text(json.dumps(extra))

    def config(**sections):
        data = {"iqs": {"scorer": "length"}, "train": {"base_model": str(tiny_lm), "max_steps": 2, "batch_size": 2,
                                                        "max_length": 64},
                "eval": {"holdout_rows": 6, "resamples": 200, "sets": [{"path": str(tmp_path / "extra.json"),
                                                                        "name": "extra"}]}}
        data.update(sections)
        return pipeline_config(str(tmp_path / "store"), sources, tiny_lm, **data)

    return config


@pytest.fixture(scope="session")
def small_verdicts(shared_data, tmp_path_factory) -> list[str]:
    """AlpacaEval's two annotation files cut to their first 40 prompts (about 3,400 judged answers)."""
    import gzip

    folder = tmp_path_factory.mktemp("verdicts")
    paths = []
    for name in ("gpt4_turbo_preferences", "gpt4_preferences_vs_davinci003"):
        with gzip.open(shared_data / "alpacaeval" / f"{name}.jsonl.gz", "rt") as handle:
            kept = [line for line in handle if int(json.loads(line)["id"].split("-")[1]) < 40]
        (folder / f"{name}.jsonl").write_text("".join(kept))
        paths.append(str(folder / f"{name}.jsonl"))
    return paths
