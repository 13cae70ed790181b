"""The `judge` scorer against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py):
ratings parsed, a 429 retried, malformed answers counted and kept, the budget never passed, the key unlogged."""
from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks import scorers
from tasks.errors import BadInputError
from tasks.scorers.base import ScorerInputs
from tasks.scorers.judge import UNPARSED_SCORE, parse_rating
from tasks.stages import get
from tests.openai_server import OpenAIServer, Reply

KEY = "sk-judge-3c9d1e7f5a2b"
QUESTIONS = {"capital of France": "4\nCorrect and concise.", "poem about the sea": "Score: 5/5\nLovely.",
             "ibuprofen": "This answer is quite good overall."}


def rows():
    return records_to_table([make_record(messages=[{"role": "user", "content": f"Tell me about the {q}."},
                                                   {"role": "assistant", "content": f"An answer on the {q}."}],
                                         system=None, uri="t", fmt="t", row=i) for i, q in enumerate(QUESTIONS)])


def rating_for(prompt: str) -> str:
    return next(answer for question, answer in QUESTIONS.items() if f"about the {question}." in prompt)


def judge(server: OpenAIServer, **settings):
    return scorers.parse_config({"scorer": "judge", "base_url": server.base_url, "model": "judge-model",
                                 "api_key_env": "JUDGE_TEST_KEY", "backoff_s": 0.05, "request_batch_size": 1,
                                 **settings})


def test_parse_rating_reads_the_first_line_only():
    assert parse_rating("4\nbecause 2 things") == 4.0 and parse_rating("\n  Score: 3.5/5") == 3.5
    assert parse_rating("Rating - 5") == 5.0
    for text in ("", "Great answer!", "0", "7\n4", "The answer\n4"):
        assert parse_rating(text) is None


def test_judge_rates_retries_a_429_and_keeps_malformed_answers(store, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    table = rows()
    conversations = store.publish_table("conv", "ingest", table)
    with OpenAIServer(rating_for, api_key=KEY) as server:
        server.script.append(Reply(429, raw='{"error": "rate limited"}', headers={"Retry-After": "0.05"}))
        result = run_stage(get("iqs"), judge(server), {"conversations": conversations}, store)
        # a body that is not a completion at all: unparseable too, its text kept
        server.script.append(Reply(raw='{"choices": []}'))
        malformed = scorers.get("judge").open(ScorerInputs(store, judge(server))).score(table.slice(0, 1))
    scored = {r["id"]: r for r in store.read_table(result.ref.key).to_pylist()}
    ids = table.column("id").to_pylist()
    assert [scored[i]["judge_rating"] for i in ids] == [4.0, 5.0, None]
    assert [scored[i]["iqs_score"] for i in ids] == [4.0, 5.0, UNPARSED_SCORE]
    assert scored[ids[2]]["judge_raw"] == QUESTIONS["ibuprofen"]  # the raw text of the unparseable answer
    assert result.stats["counts"] == {"judge_unparsed": 1, "judge_requests": 3, "judge_retries": 1,
                                      "judge_tokens": result.stats["counts"]["judge_tokens"]}
    assert result.stats["counts"]["judge_tokens"] > 0 and result.stats["model"] == "openai judge-model"
    first = server.requests[1]["body"]["messages"][0]["content"]  # the retried request
    assert "### Instruction:\nTell me about the capital of France." in first and "scale of 1 to 5" in first
    assert server.requests[0]["authorization"] == f"Bearer {KEY}" and len(server.requests) == 5
    assert malformed.values.tolist() == [UNPARSED_SCORE] and malformed.counts["judge_unparsed"] == 1
    assert "unusable answer" in malformed.columns["judge_raw"][0].as_py()
    assert "HTTP 429" in caplog.text and KEY not in caplog.text


def test_the_judge_never_passes_its_request_budget(store, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    with OpenAIServer(rating_for) as server:
        scoring = scorers.get("judge").open(ScorerInputs(store, judge(server, requests_budget=2)))
        with pytest.raises(BadInputError, match="requests_budget"):
            scoring.score(rows())
    assert len(server.requests) == 2


def test_a_missing_key_or_a_bad_template_is_bad_input(store, monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    with OpenAIServer(rating_for) as server:
        with pytest.raises(BadInputError, match="JUDGE_TEST_KEY"):
            scorers.get("judge").open(ScorerInputs(store, judge(server)))
        with pytest.raises(ValidationError, match="instruction"):
            judge(server, prompt="Rate {answer}")
    assert server.requests == []


def test_the_stage_finds_every_secret_block_its_config_names_combine_members_included():
    from flows.secrets import secrets_of

    member = {"scorer": "judge", "api_key_secret": "judge-key", "api_key_env": "JUDGE_TEST_KEY"}
    params = scorers.parse_config({"scorer": "combine", "members": [member, {"scorer": "length"}]})
    assert secrets_of(params) == [("judge-key", "JUDGE_TEST_KEY")]
    assert secrets_of(scorers.parse_config({"scorer": "judge"})) == []


def test_the_judge_rates_with_a_local_model_and_accounts_for_every_answer(store, tiny_lm):
    # the tiny untrained Llama rarely writes a rating: what it writes is kept and counted, never dropped
    params = scorers.parse_config({"scorer": "judge", "backend": "local", "model": str(tiny_lm), "device": "cpu",
                                   "prompt": "Rate 1 to 5: {instruction} {input} -> {response}", "max_tokens": 6,
                                   "request_batch_size": 2})
    scoring = scorers.get("judge").open(ScorerInputs(store, params))
    first, again = scoring.score(rows()), scoring.score(rows())
    ratings = first.columns["judge_rating"].to_pylist()
    assert first.values.tolist() == again.values.tolist() and len(ratings) == 3  # greedy: the same every time
    assert first.values.tolist() == [UNPARSED_SCORE if r is None else r for r in ratings]
    assert all(r is None or 1 <= r <= 5 for r in ratings)
    assert first.counts["judge_unparsed"] == ratings.count(None) and first.counts["judge_requests"] == 3
    assert first.counts["judge_tokens"] > 0 and None not in first.columns["judge_raw"].to_pylist()
    assert scoring.model == f"local {tiny_lm}"
