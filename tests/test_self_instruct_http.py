"""Self-instruct against a real OpenAI-compatible HTTP server on 127.0.0.1: retries, backoff, malformed answers,
budgets, the API key kept out of logs, the CLI end to end, and the Prefect flow with a Secret block."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.stage import run_stage
from tasks.self_instruct.openai_http import BackendError, OpenAIChatBackend
from tasks.stages.self_instruct import STAGE as SELF_INSTRUCT_STAGE
from tasks.stages.self_instruct import SelfInstructConfig
from tests.openai_server import OpenAIServer, Reply
from tests.test_self_instruct_parse import GPT_OUTPUT

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-5f1e9c0d7a3b4e2f8a6c"

# A second realistic continuation: one duplicate of GPT_OUTPUT's first task, the last task cut off.
SECOND_OUTPUT = """ Identify the odd one out in the following list of words.
4. Input:
Apple, banana, carrot, mango
4. Output:
Carrot, because it is a vegetable while the others are fruits.
###
5. Instruction: Compose a polite email declining an invitation to a colleague's birthday party.
5. Input:
<noinput>
5. Output:
Dear Sam, thank you so much for the kind invitation. Unfortunately, I have a prior commitment that evening \
and won't be able to attend. I hope you have a wonderful celebration! Best, Alex
###
6. Instruction: Rewrite the following sentence in the passive voice please.
6. Input:
The chef cooked a delicious meal.
6. Output:
A delicious meal was cooked by the chef.
###
7. Instruction: Calculate the area of a circle with the given radius.
7. Input:
7 cm
7. Output:
The area is about 153.94 square centimeters.
###
8. Instruction: Explain the difference between weather and climate to a ten-year-old.
8. Input:
<noinput>
8. Output:
Weather is what"""
REFUSAL = "I'm sorry, but I can't continue this list."


def backend(server: OpenAIServer, **kwargs) -> OpenAIChatBackend:
    return OpenAIChatBackend(server.base_url, "test-model", KEY, backoff_s=0.05, **kwargs)


def test_429_then_success_honors_retry_after(caplog):
    caplog.set_level(logging.DEBUG)
    with OpenAIServer(GPT_OUTPUT) as server:
        server.script.append(Reply(429, raw='{"error": "rate limited"}', headers={"Retry-After": "0.3"}))
        client = backend(server)
        [completion] = client.complete(["1. Instruction:"])
    assert completion.text == GPT_OUTPUT and completion.finish_reason == "stop" and completion.error is None
    assert len(server.requests) == 2 and client.retries == 1 and client.waits == [0.3]
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.3
    assert server.requests[0]["authorization"] == f"Bearer {KEY}"
    body = server.requests[1]["body"]
    assert body["model"] == "test-model" and body["max_tokens"] == 3072 and body["n"] == 1
    assert "HTTP 429" in caplog.text and KEY not in caplog.text


def test_5xx_backs_off_exponentially_then_gives_up_without_leaking_the_key(caplog):
    caplog.set_level(logging.DEBUG)
    with OpenAIServer(GPT_OUTPUT) as server:
        server.script.extend([Reply(503, raw="{}"), Reply(502, raw="{}"), Reply(500, raw="{}")])
        client = backend(server, max_retries=2)
        with pytest.raises(BackendError, match="HTTP 500 .* after 3 attempts") as error:
            client.complete(["1. Instruction:"])
    assert client.waits == [0.05, 0.1]
    gaps = [b["time"] - a["time"] for a, b in zip(server.requests, server.requests[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1
    assert KEY not in str(error.value) and KEY not in caplog.text


def test_wrong_key_is_not_retried_and_not_echoed():
    with OpenAIServer(GPT_OUTPUT, api_key="sk-the-right-one") as server:
        with pytest.raises(BackendError, match="401 .*Incorrect API key") as error:
            backend(server).complete(["1. Instruction:"])
    assert len(server.requests) == 1 and KEY not in str(error.value)


def test_malformed_answers_become_errors_not_crashes():
    with OpenAIServer(GPT_OUTPUT) as server:
        server.script.extend([Reply(raw="<html>upstream timed out</html>"), Reply(raw='{"choices": []}')])
        first, second = backend(server, concurrency=1).complete(["a", "b"])
    assert first.error.startswith("unusable answer (JSONDecodeError") and "upstream timed out" in first.error
    assert second.error.startswith("unusable answer (IndexError")


def test_tokens_are_estimated_when_the_server_sends_no_usage():
    with OpenAIServer() as server:
        server.script.append(Reply(raw=json.dumps({"choices": [{"message": {"content": "x" * 40},
                                                                "finish_reason": "stop"}]})))
        [completion] = backend(server).complete(["y" * 400])
    assert (completion.prompt_tokens, completion.completion_tokens) == (100, 10)


def test_batched_requests_run_concurrently_and_keep_their_order():
    with OpenAIServer(lambda prompt: f"answer to {prompt}") as server:
        completions = backend(server, concurrency=4).complete([f"prompt {i}" for i in range(8)])
    assert [c.text for c in completions] == [f"answer to prompt {i}" for i in range(8)]
    assert [c.prompt_tokens for c in completions] == [2] * 8
    assert len(server.requests) == 8


def config(server: OpenAIServer, shared_data: Path, **overrides) -> SelfInstructConfig:
    fields = dict(seed_tasks=str(shared_data / "alpaca" / "seed_tasks.jsonl"), base_url=server.base_url,
                  model="test-model", api_key_env="SFTFLOW_TEST_API_KEY", request_batch_size=1, backoff_s=0.05)
    return SelfInstructConfig(**{**fields, **overrides})


def test_tokens_budget_stops_before_the_next_batch(shared_data, store, monkeypatch):
    monkeypatch.setenv("SFTFLOW_TEST_API_KEY", KEY)
    with OpenAIServer(REFUSAL) as server:
        result = run_stage(SELF_INSTRUCT_STAGE, config(server, shared_data, request_batch_size=3, tokens_budget=50),
                           {}, store)
    assert result.stats["stop_reason"] == "tokens_budget" and result.stats["requests"] == 3
    assert len(server.requests) == 3 and result.ref.rows == 0
    assert store.read_table(f"{result.ref.key}-quarantine").column("reason").to_pylist() == ["malformed"] * 3


def test_missing_key_is_a_clear_error(shared_data, store, monkeypatch):
    from tasks.errors import BadInputError

    monkeypatch.delenv("SFTFLOW_TEST_API_KEY", raising=False)
    with OpenAIServer(GPT_OUTPUT) as server, pytest.raises(BadInputError, match="SFTFLOW_TEST_API_KEY"):
        run_stage(SELF_INSTRUCT_STAGE, config(server, shared_data), {}, store)
    assert server.requests == []


def scripted(server: OpenAIServer) -> None:
    """429 → refusal, then a non-JSON answer, two good continuations, and the first one again (duplicates)."""
    server.script.extend([Reply(429, raw="{}", headers={"Retry-After": "0.2"}), Reply(text=REFUSAL),
                          Reply(raw="<html>bad gateway</html>"), Reply(text=GPT_OUTPUT),
                          Reply(text=SECOND_OUTPUT, finish_reason="length"), Reply(text=GPT_OUTPUT)])


def prompt_has_seeds(prompt: str, instructions: list[str]) -> bool:
    return all(f"{i}. Instruction: {' '.join(text.split())}\n" in prompt for i, text in enumerate(instructions, 1))


def test_cli_end_to_end(shared_data, tmp_path):
    env = {**os.environ, "SFTFLOW_TEST_API_KEY": KEY}
    output = tmp_path / "generated.jsonl"
    with OpenAIServer(REFUSAL) as server:
        scripted(server)
        command = [sys.executable, "-m", "flows", "-v", "generate-instructions",
                   "--seed-tasks", str(shared_data / "alpaca" / "seed_tasks.jsonl"), "--backend", "openai",
                   "--base-url", server.base_url, "--model", "test-model", "--api-key-env", "SFTFLOW_TEST_API_KEY",
                   "--num-instructions", "8", "--request-batch-size", "1", "--requests-budget", "5",
                   "--backoff-s", "0.05", "--store", str(tmp_path / "store"), "--output", str(output), "--json"]
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ran" and result["stop_reason"] == "requests_budget"
    assert result["requests"] == 5 and result["retries"] == 1 and result["kept"] == result["rows"] == 6
    assert result["dropped"] == {"bad_response": 1, "blacklist": 2, "duplicate": 4, "malformed": 5,
                                 "non_english_start": 2, "starts_with_punctuation": 2, "too_short": 2,
                                 "truncated": 1, "write_a_program": 2}
    assert result["duplicates"] == 4 and result["generated"] == 6 + 21 - 1
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.2  # Retry-After honored
    assert KEY not in proc.stderr and KEY not in proc.stdout and "HTTP 429" in proc.stderr
    assert all(r["authorization"] == f"Bearer {KEY}" for r in server.requests)
    store_files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert store_files and not any(KEY.encode() in p.read_bytes() for p in store_files)

    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["instruction"] for r in rows][:3] == [
        "Rewrite the following sentence in the passive voice.",
        "What are the main differences between a crocodile and an alligator?",
        "Suggest three names for a bakery that specializes in sourdough bread."]
    assert rows[0] == {"instruction": "Rewrite the following sentence in the passive voice.",
                       "input": "The committee approved the new budget on Tuesday.",
                       "output": "The new budget was approved by the committee on Tuesday."}

    from storage.store import Store

    store = Store(str(tmp_path / "store"))
    table = store.read_table(result["key"])
    seeds = {json.loads(line)["id"]: json.loads(line)["instruction"]
             for line in (shared_data / "alpaca" / "seed_tasks.jsonl").read_text().splitlines()}
    prompts = [r["body"]["messages"][0]["content"] for r in server.requests]
    for record in table.to_pylist():
        meta = json.loads(record["meta"])
        assert meta["backend"] == "openai" and meta["model"] == "test-model" and len(meta["seed_task_ids"]) == 3
        assert prompt_has_seeds(prompts[meta["request"] + 1], [seeds[i] for i in meta["seed_task_ids"]])
        assert record["messages"][0]["content"].startswith(meta["instruction"])
        assert record["source"]["format"] == "self_instruct" and meta["max_rouge_l"] <= 0.7
    assert store.read_file(result["key"], "outcomes.png").startswith(b"\x89PNG")
    quarantine = store.read_table(result["quarantine"]).to_pylist()
    assert len(quarantine) == sum(result["dropped"].values())
    duplicate = next(q for q in quarantine if q["reason"] == "duplicate" and q["request"] == 3)
    assert duplicate["instruction"] == "Rewrite the following sentence in the passive voice please."
    assert duplicate["most_similar"] == "Rewrite the following sentence in the passive voice."

    canonical = tmp_path / "generated.parquet"
    again = subprocess.run(command[:-3] + ["--output", str(canonical), "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["status"] == "cached" and json.loads(again.stdout)["kept"] == 6
    import pyarrow.parquet as pq

    assert pq.read_table(canonical).equals(table)  # lineage and ids travel with the canonical export


def test_flow_parameters_keep_the_connection_settings():
    from flows.self_instruct import self_instruct

    sent = SelfInstructConfig(seed_tasks="seeds.jsonl", api_key_env="MY_KEY", api_key_secret="my-block", timeout_s=5)
    serialized = self_instruct.serialize_parameters({"config": sent})["config"]
    assert SelfInstructConfig.model_validate(serialized) == sent  # what a deployment run receives


@pytest.mark.slow
def test_flow_reads_the_key_from_a_prefect_secret(shared_data, prefect_api, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.self_instruct import self_instruct

    monkeypatch.delenv("SFTFLOW_FLOW_API_KEY", raising=False)
    Secret(value=KEY).save("sftflow-test-openai-key", overwrite=True)
    with OpenAIServer(GPT_OUTPUT, api_key=KEY) as server:
        result = self_instruct(config(server, shared_data, api_key_env="SFTFLOW_FLOW_API_KEY",
                                      api_key_secret="sftflow-test-openai-key", num_instructions=3),
                               store=str(tmp_path / "store"), output=str(tmp_path / "out.jsonl"))
    assert result["kept"] == 3 and result["requests"] == 1 and result["rows"] == 3
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    assert "SFTFLOW_FLOW_API_KEY" not in os.environ
