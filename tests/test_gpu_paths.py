"""The CUDA path of every model stage under the one precision rule (`-m gpu`; skipped without a GPU): auto picks
bf16 autocast on a GPU that has it, and the results stay within the gates measured on the CPU."""
from __future__ import annotations

import numpy as np
import pytest

from storage.schema import make_record, records_to_table
from storage.stage import run_stage

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


def conversations(store, n: int = 40):
    rows = [make_record(uri="t", fmt="t", row=i, system=None,
                        messages=[{"role": "user", "content": f"Give {i} reasons to learn a language."},
                                  {"role": "assistant", "content": "It opens doors. " * (1 + i % 6)}])
            for i in range(n)]
    return store.publish_table(f"conversations-gpu-{n}", "ingest", records_to_table(rows))


def test_embed_on_cuda_is_bf16_and_close_to_fp32(store):
    import torch

    from tasks.stages.embed import STAGE, EmbedConfig

    data = {"conversations": conversations(store)}
    auto = run_stage(STAGE, EmbedConfig(), data, store)
    exact = run_stage(STAGE, EmbedConfig(precision="fp32"), data, store)
    assert auto.stats["device"] == "cuda"
    assert auto.stats["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    a = np.stack(store.read_table(auto.ref.key).column("embedding").to_numpy(zero_copy_only=False))
    b = np.stack(store.read_table(exact.ref.key).column("embedding").to_numpy(zero_copy_only=False))
    assert (a * b).sum(axis=1).min() > 0.999


def test_comet_scoring_on_cuda_keeps_the_ranking(store, shared_data):
    from scipy.stats import kendalltau

    from flows.config import load_config
    from tasks.stages.iqs import STAGE as SCORE
    from tasks.stages.iqs_train import STAGE as TRAIN

    car = shared_data / "car"
    config = load_config(None, [f"iqs.revisions=[{car / 'APE_score_train.csv'}]",
                                f"iqs.validation_revisions=[{car / 'APE_score_valid.csv'}]",
                                "iqs.limit_train_batches=16", "iqs.epochs=1"])
    model = run_stage(TRAIN, config.iqs, {}, store)
    data = {"conversations": conversations(store, 64), "iqs_model": model.ref}
    auto = run_stage(SCORE, config.iqs, data, store)
    exact = run_stage(SCORE, config.iqs.model_copy(update={"precision": "fp32"}), data, store)
    assert auto.stats["device"] == "cuda" and auto.stats["precision"] in ("bf16", "fp32")
    tau = kendalltau(store.read_table(auto.ref.key).column("iqs_score").to_numpy(),
                     store.read_table(exact.ref.key).column("iqs_score").to_numpy()).statistic
    assert tau > 0.95


def test_evaluate_on_cuda_is_within_the_gate_of_fp32(store, tiny_confident_lm):
    from transformers import AutoTokenizer

    from tasks.evaluate import loss
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    rows = store.read_table(conversations(store).key).to_pylist()
    table = ConversationEncoder(AutoTokenizer.from_pretrained(tiny_confident_lm), get_template("chatml"),
                                max_length=128).encode(rows).table
    fast, exact = loss.score_table(table, tiny_confident_lm, source="t"), \
        loss.score_table(table, tiny_confident_lm, source="t", precision="fp32")
    assert abs(fast.mean_loss - exact.mean_loss) < 0.005
