"""Training's peak memory, measured from outside the process (issue: an ablation reached 16.4 GB inside one
training): SmolLM2-135M LoRA at batch 8 x 512 tokens on the longest Alpaca answers stays within 3 GB."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from storage.memory import rss_mb
from tests.conftest import ROOT

BOUND_MB = 3 * 1024
TRAIN_SCRIPT = textwrap.dedent("""
    import gzip, json, sys
    from pathlib import Path
    from storage.schema import make_record
    from storage.stage import run_stage
    from storage.store import Store
    from tasks.stages import get
    from tasks.stages.base_model import BaseModelParams
    from tasks.stages.train import TrainConfig
    from tasks.templates import get_template
    from tasks.text import alpaca_user_content
    from tasks.tokenize import ConversationEncoder
    from transformers import AutoTokenizer

    store, alpaca = Store(sys.argv[1]), sys.argv[2]
    base = run_stage(get("base_model"), BaseModelParams(), {}, store).ref
    rows = sorted(json.loads(gzip.decompress(Path(alpaca).read_bytes())), key=lambda r: -len(r["output"]))[:24]
    tokenizer = AutoTokenizer.from_pretrained(store.local_path(base.key, "files", "model"))
    records = [make_record(messages=[{"role": "user", "content": alpaca_user_content(r["instruction"], r["input"])},
                                     {"role": "assistant", "content": r["output"]}],
                           system=None, uri="alpaca", fmt="alpaca", row=i) for i, r in enumerate(rows)]
    table = ConversationEncoder(tokenizer, get_template("chatml"), max_length=512).encode(records).table
    tokenized = store.publish_table("format-longest", "format", table, params={"template": "chatml"})
    config = TrainConfig(batch_size=8, max_length=512, max_steps=2, eval_share=0.0, sample_prompts=[])
    result = run_stage(get("train"), config, {"tokenized": tokenized, "base_model": base}, store)
    print(json.dumps({k: result.stats[k] for k in ("micro_batch_rows", "precision", "peak_rss_mb")}))
""")


@pytest.mark.slow
def test_a_training_at_8_by_512_stays_within_3_gb(shared_data, tmp_path):
    alpaca = shared_data / "alpaca" / "alpaca_data_52k.json.gz"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / "store"), str(alpaca)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb("VmHWM", proc.pid) or 0.0)  # the kernel's own peak of the child, read from here
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert 0 < peak <= BOUND_MB, f"peak {peak:.0f} MB: {out}"
