"""Self-instruct with a local transformers model (the tiny Llama built in the test session)."""
from __future__ import annotations

import json

import pytest

from storage.stage import run_stage
from tasks.errors import BadInputError
from tasks.self_instruct.local_hf import LocalTransformersBackend
from tasks.stages.self_instruct import STAGE as SELF_INSTRUCT_STAGE
from tasks.stages.self_instruct import SelfInstructConfig

SEEDS = [
    {"id": "seed_a", "instruction": "Give three tips for staying healthy.",
     "instances": [{"input": "", "output": "Eat well, sleep enough and exercise."}]},
    {"id": "seed_b", "instruction": "What is the capital of France?",
     "instances": [{"input": "", "output": "Paris."}]},
    {"id": "seed_c", "instruction": "Classify the sentiment of the review.",
     "instances": [{"input": "I love it.", "output": "positive"}]},
]


@pytest.fixture
def seed_files(tmp_path):
    seeds = tmp_path / "seed_tasks.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    (tmp_path / "prompt.txt").write_text("Come up with 5 diverse tasks.\n\nList of 5 tasks:")
    return seeds


def test_batched_generation_counts_tokens_and_is_reproducible(tiny_lm):
    def run():
        backend = LocalTransformersBackend(str(tiny_lm), max_tokens=12, temperature=1.0, seed=3, device="cpu")
        return backend.complete(["1. Instruction: Give three tips.\n2. Instruction:", "Write a short poem"])

    first, second = run(), run()
    assert first == second and len(first) == 2
    for completion in first:
        assert completion.prompt_tokens > 0 and 0 < completion.completion_tokens <= 12
        assert completion.finish_reason in ("stop", "length")
    # the shorter prompt is left-padded, and its token count excludes the padding
    assert first[0].prompt_tokens > first[1].prompt_tokens


def test_stage_with_the_local_backend(tiny_lm, seed_files, store):
    config = SelfInstructConfig(seed_tasks=str(seed_files), backend="local", model=str(tiny_lm), device="cpu",
                                num_prompt_instructions=2, request_batch_size=2, requests_budget=4, max_tokens=16)
    result = run_stage(SELF_INSTRUCT_STAGE, config, {}, store)
    stats = result.stats
    assert stats["requests"] == 4 and stats["stop_reason"] == "requests_budget"
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    quarantine = store.read_table(f"{result.ref.key}-quarantine").to_pylist()
    assert len(quarantine) == sum(stats["dropped"].values()) and result.ref.rows == stats["kept"]
    # an untrained model cannot follow the format: every answer is accounted for, none is silently lost
    assert {q["request"] for q in quarantine} | {json.loads(r)["request"] for r in
                                                 store.read_table(result.ref.key).column("meta").to_pylist()} \
        == {0, 1, 2, 3}
    assert all(len(q["seed_task_ids"]) == 2 and set(q["seed_task_ids"]) <= {"seed_a", "seed_b", "seed_c"}
               for q in quarantine)
    assert "self-instruct" in store.read_file(result.ref.key, "report.md").decode()


def test_prompt_longer_than_the_context_is_a_clear_error(tiny_lm, shared_data, store):
    config = SelfInstructConfig(seed_tasks=str(shared_data / "alpaca" / "seed_tasks.jsonl"), backend="local",
                                model=str(tiny_lm), device="cpu", request_batch_size=1, max_tokens=16)
    with pytest.raises(BadInputError, match="context 256"):
        run_stage(SELF_INSTRUCT_STAGE, config, {}, store)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(BadInputError, match="model folder"):
        LocalTransformersBackend(str(tmp_path / "nope"))
