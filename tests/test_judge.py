"""Judges of answers: the reward judge trained on AlpacaEval's verdicts (split by prompt, its report card), an
OpenAI-compatible endpoint in AlpacaEval 2.0's wording against a real HTTP server on 127.0.0.1, a Hugging Face
reward model, the judge stage, the judged metrics and `sftflow judge --validate`."""
from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pytest

from flows.plan import run_alone
from storage.schema import make_record
from tasks import judges
from tasks.errors import BadInputError
from tasks.evaluate.judged import Judgement, judged_table, length_controlled, order_agreement, win_rate
from tasks.stages import get
from tasks.stages.generate import GENERATION_SCHEMA
from tasks.verdicts import decisive_pairs, held_out, read_answers
from tests.openai_server import OpenAIServer, Reply

QUESTIONS = ["What is the capital of France?", "Give two tips for sleeping well.", "Name a prime number.",
             "How do plants make food?"]


def generations(store, key: str, answers: list[str], prompts_key: str = "prompts-test") -> str:
    """A generate output of `answers` to QUESTIONS, as the generate stage publishes it."""
    rows = []
    for i, (question, answer) in enumerate(zip(QUESTIONS, answers)):
        record = make_record(messages=[{"role": "user", "content": question},
                                       {"role": "assistant", "content": answer}], system=None, uri="q.json",
                             fmt="generated", row=i)
        rows.append({**record, "prompt_id": f"p{i}", "finish_reason": "stop", "new_tokens": len(answer.split()),
                     "generator": key})
    store.publish_table(key, "generate", pa.Table.from_pylist(rows, schema=GENERATION_SCHEMA),
                        stats={"prompts": prompts_key})
    return key


SHORT = ["Paris.", "Sleep.", "2.", "Sun."]
LONG = ["The capital of France is Paris, its largest city, on the Seine.",
        "- Keep a regular schedule.\n- Avoid screens before bed, and keep the room dark and cool.",
        "Two is a prime number: its only divisors are one and itself.",
        "Plants make food by photosynthesis: chlorophyll captures light, which turns water and carbon dioxide "
        "into glucose and oxygen."]


@pytest.fixture(scope="module")
def reward_model(small_verdicts, tmp_path_factory):
    from storage.store import Store

    store = Store(str(tmp_path_factory.mktemp("judge-store")))
    params = judges.parse_config({"judge": "reward", "verdicts": small_verdicts, "features": "style",
                                  "valid_fraction": 0.3})
    return store, params, run_alone(get("judge.train"), params, {}, store)


def test_the_reward_judge_trains_on_some_prompts_and_is_carded_on_the_others(reward_model, small_verdicts):
    store, params, trained = reward_model
    card = trained.stats["card"]
    assert set(card) == set(small_verdicts)
    for path, row in card.items():
        answers = read_answers(path, params.prompts)
        valid = decisive_pairs(answers, path, keep=lambda i: held_out(i, 0.3))
        assert row["pairs"] == len(valid) > 100  # the held-out prompts' decisive pairs, and only those
        assert not {p.first.prompt_id for p in valid} & {p.first.prompt_id for p in decisive_pairs(
            answers, path, keep=lambda i: not held_out(i, 0.3))}  # split by prompt
        assert 0.5 < row["longer_wins"] < 1 and 0.5 < row["agreement"] <= 1
    # the judge stage: the longer, fuller answers win; ties count half; the card travels with the verdicts
    long_key = generations(store, "generate-long", LONG)
    short_key = generations(store, "generate-short", SHORT)
    inputs = {"answers": long_key, "baseline": short_key, "judge_model": trained.ref.key}
    result = run_alone(get("judge"), params, inputs, store)
    assert result.stats["win_rate"] == 1.0 and result.stats["winning_score"] == 2.0
    assert result.stats["card"] == card and result.stats["first_mean_chars"] > result.stats["second_mean_chars"]
    same = run_alone(get("judge"), params, {**inputs, "baseline": long_key}, store)
    assert same.stats["ties"] == 4 and same.stats["win_rate"] == 0.5
    other = generations(store, "generate-other", SHORT, prompts_key="prompts-other")
    with pytest.raises(BadInputError, match="answer different prompts") as info:
        run_alone(get("judge"), params, {**inputs, "baseline": other}, store)
    assert info.value.field == "baseline"
    with pytest.raises(BadInputError, match="no judge 'gpt5'"):
        judges.get("gpt5")


def test_the_judge_cli_validates_against_a_verdict_file(reward_model, small_verdicts, capsys):
    from flows.cli import main

    store, params, trained = reward_model
    assert main(["judge", "--validate", small_verdicts[0], "--model", trained.ref.key, "--store", store.url,
                 "--set", f"judge.verdicts={json.dumps(small_verdicts)}", "--set", "judge.features=style",
                 "--set", "judge.valid_fraction=0.3", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert {"pairs", "agreement", "longer_wins", "first_wins"} <= set(card)
    assert card["pairs"] == trained.stats["card"][small_verdicts[0]]["pairs"]  # only prompts it never trained on
    assert card["agreement"] == trained.stats["card"][small_verdicts[0]]["agreement"]
    assert main(["judge", "--validate", small_verdicts[0], "--model", trained.ref.key, "--store", store.url,
                 "--all-prompts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] > card["pairs"]


def verdict_for(prompt: str) -> str:
    """A judge that prefers the output holding 'Paris' (or, for other prompts, the first one shown)."""
    m_output = prompt.split('"model_identifier": "m"')[1].split('"model_identifier": "M"')[0]
    if "Give two tips" in prompt:
        return "I think both are fine"  # undecidable: names neither identifier
    return "m" if "Paris" in m_output or "France" not in prompt else "M"


def test_an_endpoint_judge_asks_both_orders_caches_and_never_logs_its_key(store, monkeypatch, caplog):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    server = OpenAIServer(default_text=verdict_for, api_key="sk-secret-123")
    with server:
        params = judges.parse_config({"judge": "openai", "base_url": server.base_url, "model": "judge",
                                      "api_key_env": "JUDGE_KEY", "backoff_s": 0.01, "concurrency": 1})
        inputs = {"answers": generations(store, "generate-a", LONG), "baseline": generations(store, "generate-b",
                                                                                             SHORT)}
        # a cut run: three replies, then the endpoint refuses (not a retryable status); the step fails
        server.script.extend([Reply(text="m"), Reply(text="M"), Reply(text="m"),
                              Reply(400, raw='{"error": "bad request"}')])
        with caplog.at_level(logging.DEBUG), pytest.raises(RuntimeError, match="400"):
            run_alone(get("judge"), params, inputs, store)
        server.script.append(Reply(429, raw='{"error": "slow down"}', headers={"Retry-After": "0"}))
        with caplog.at_level(logging.DEBUG):
            result = run_alone(get("judge"), params, inputs, store)
        assert len(server.requests) == 4 + 1 + (2 * 4 - 3)  # the cut run's, a retried 429, what was not cached
        assert result.stats["cached_replies"] == 3
        table = store.read_table(result.ref.key).to_pylist()
        bodies = [r["body"]["messages"][0]["content"] for r in server.requests]
        shown_first = [b.split('"model_identifier": "M"')[0] for b in bodies]
        assert any("The capital of France is Paris" in b for b in shown_first)
        assert any('"""Paris."""' in b for b in shown_first)  # each answer shown first once
        verdicts = {row["prompt"]: row for row in table}
        assert verdicts[QUESTIONS[1]]["verdict"] is None  # undecided: left out, not a loss or a tie
        assert verdicts[QUESTIONS[2]]["verdict"] == 0.5 and not verdicts[QUESTIONS[2]]["consistent"]
        assert result.stats["undecided"] == 1 and result.stats["decided"] == 3
        assert "sk-secret-123" not in caplog.text and "sk-secret-123" not in json.dumps(result.stats)


def test_a_hugging_face_reward_model_scores_each_answer(store, tmp_path):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    words = sorted({w for text in QUESTIONS + LONG + SHORT for w in text.split()})
    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=2, num_attention_heads=2, num_labels=1,
                                                       pad_token_id=0))
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    params = judges.parse_config({"judge": "hf_reward", "model": str(tmp_path / "rm"), "precision": "fp32"})
    result = run_alone(get("judge"), params, {"answers": generations(store, "generate-long", LONG),
                                              "baseline": generations(store, "generate-short", SHORT)}, store)
    rows = store.read_table(result.ref.key).to_pylist()
    assert all(r["first_score"] is not None and r["second_score"] is not None for r in rows)
    assert all(abs(r["p_first"] - 1 / (1 + np.exp(r["second_score"] - r["first_score"]))) < 1e-6 for r in rows)
    with pytest.raises(BadInputError, match="cannot load a reward model"):
        run_alone(get("judge"), params.model_copy(update={"model": str(tmp_path / "nothing")}),
                  {"answers": "generate-long", "baseline": "generate-short"}, store)


def test_win_rates_intervals_and_the_length_controlled_rate():
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(300)]

    def judgement(model: str, seed: int, wins_by_length: bool) -> Judgement:
        longer = rng.normal(200, 60, 300)
        shorter = rng.normal(100, 30, 300)
        if wins_by_length:  # longer answers, judged better because they are longer
            first, second = longer, shorter
            verdict = (rng.random(300) < 1 / (1 + np.exp(-(first - second) / 40))).astype(float)
        else:  # as long as the baseline, and better 70% of the time
            first, second = shorter, rng.normal(100, 30, 300)
            verdict = (rng.random(300) < 0.7).astype(float)
        return Judgement(model, seed, "set", prompts, verdict, first, second)

    found = [judgement("longer", s, True) for s in range(2)] + [judgement("better", s, False) for s in range(2)]
    rows = {r["model"]: r for r in judged_table(found, "random", resamples=300)}
    assert rows["longer"]["win_rate"]["estimate"] > 0.8 and rows["better"]["win_rate"]["estimate"] > 0.6
    assert rows["longer"]["lc_win_rate"]["estimate"] < rows["longer"]["win_rate"]["estimate"] - 0.05  # discounted
    assert abs(rows["better"]["lc_win_rate"]["estimate"] - rows["better"]["win_rate"]["estimate"]) < 0.08
    for row in rows.values():
        rate = row["win_rate"]
        assert rate["low"] < rate["estimate"] < rate["high"] and row["seeds"] == 2 and row["prompts"] == 300
        assert row["winning_score"] == round((row["wins"] - row["losses"]) / 600 + 1, 4)
    tie = win_rate(np.array([[1.0, 0.5, 0.0, np.nan]]), resamples=50)
    assert tie["estimate"] == 0.5  # ties half, undecided left out
    assert order_agreement({"a": 0.7, "b": 0.6}, {"a": 1.8, "b": 1.9})["agree"]
    assert not order_agreement({"a": 0.7, "b": 0.6}, {"a": 1.9, "b": 1.8})["agree"]
    assert set(length_controlled({"x": (np.ones((1, 3)), np.zeros((1, 3)))}, resamples=10)) == {"x"}


@pytest.mark.slow
def test_evaluate_judges_an_adapter_against_its_base_model(store, tiny_confident_lm, small_verdicts, tmp_path,
                                                          capsys):
    from transformers import AutoTokenizer

    from flows.cli import main
    from tasks.stages.base_model import BaseModelParams
    from tasks.stages.train import TrainConfig
    from tests.test_train import PAIRS, publish_tokenized, tokenized_table

    base = run_alone(get("base_model"), BaseModelParams(reference=str(tiny_confident_lm)), {}, store).ref
    tokenized = publish_tokenized(store, tokenized_table(AutoTokenizer.from_pretrained(tiny_confident_lm), PAIRS))
    adapter = run_alone(get("train"), TrainConfig(max_steps=2, batch_size=2, eval_share=0.0, sample_prompts=[]),
                        {"tokenized": tokenized.key, "base_model": base.key}, store).ref
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": q}) for q in QUESTIONS))
    args = ["evaluate", "--model", adapter.key[:14], "--prompts", str(prompts), "--store", store.url,
            "--set", f"judge.verdicts={json.dumps(small_verdicts)}", "--set", "judge.features=style",
            "--set", "generate.max_new_tokens=4", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    (found,) = result["sets"]
    assert found["prompt_set"] == "prompts" and found["wins"] + found["ties"] + found["losses"] == 4
    assert set(found["card"]) == set(small_verdicts)
    assert main(args) == 0  # the second time every step comes from the store
    assert json.loads(capsys.readouterr().out)["sets"][0]["key"] == found["key"]
    assert main(["evaluate", "--model", base.key, "--prompts", str(prompts), "--store", store.url]) == 2
    assert "not a trained adapter" in capsys.readouterr().err


def test_a_judge_endpoint_without_its_key_fails_before_anything_runs(ablation_config, monkeypatch, tmp_path):
    from flows.ablation import ablation_plan, grid

    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi?"}))
    config = ablation_config(generate={"prompts": [str(prompts)]},
                             judge={"judge": "openai", "base_url": "http://127.0.0.1:9/v1",
                                    "api_key_env": "NO_SUCH_KEY"})
    with pytest.raises(BadInputError, match="NO_SUCH_KEY is empty or not set") as info:
        ablation_plan(config, 8, arms=grid(["car", "random"], 1))
    assert info.value.field == "api_key_env"
    from flows.config import load_config

    with pytest.raises(BadInputError, match="no prompt set 'mtbench'; the named sets are alpacaeval"):
        load_config(None, ["generate.prompts=[mtbench]"])
