"""The `ifd` scorer with the tiny Llama: its losses against the model's own loss, Superfiltering's rule, the
multi-turn condition, truncation, and its base model wired from the pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from flows.config import load_config
from storage.schema import make_record, records_to_table
from storage.stage import run_stage
from tasks import scorers
from tasks.scorers.base import ScorerInputs
from tasks.scorers.ifd import NO_ANSWER_SCORE, ifd_scores, prompt_text, split_last_answer
from tasks.stages import get


def record(messages, system=None, row=0):
    return make_record(messages=messages, system=system, uri="t", fmt="t", row=row)


def answer_loss(model, tokenizer, prefix: str, answer: str) -> float:
    """The mean cross-entropy of the answer's tokens after `prefix`, by the model's own loss (labels shifted)."""
    import torch

    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prefix_ids) + answer_ids])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def test_ifd_is_the_ratio_of_the_models_own_answer_losses(tiny_confident_lm, store):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = records_to_table([
        record([{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris is the capital of France."}]),
        record([{"role": "user", "content": "Write a short poem about the sea."},
                {"role": "assistant", "content": "The sea is wide and blue and deep."},
                {"role": "user", "content": "Now about a fox."},
                {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."}],
               system="You are a helpful assistant.", row=1),
        record([{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}], row=2)])
    # exact (fp32): the losses are the model's own to 1e-4; bf16 (auto on CPUs with bf16 units) is another pass
    params = scorers.parse_config({"scorer": "ifd", "model": str(tiny_confident_lm), "batch_size": 2,
                                   "precision": "fp32"})
    scores = scorers.get("ifd").open(ScorerInputs(store, params)).score(rows)

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_confident_lm), AutoTokenizer.from_pretrained(
        tiny_confident_lm)
    for i, r in enumerate(rows.to_pylist()[:2]):
        turns, answer = split_last_answer(r["system"], r["messages"])
        conditioned = answer_loss(model, tokenizer, prompt_text(tokenizer, turns), answer)
        alone = answer_loss(model, tokenizer, prompt_text(tokenizer, []), answer)
        assert scores.columns["ifd_conditioned_loss"][i].as_py() == pytest.approx(conditioned, rel=1e-4)
        assert scores.columns["ifd_answer_loss"][i].as_py() == pytest.approx(alone, rel=1e-4)
        assert scores.columns["ifd"][i].as_py() == pytest.approx(conditioned / alone, rel=1e-4)
        assert abs(conditioned - alone) > 1e-4  # the condition changes the loss (exactly equal if unused)
    # the second row is conditioned on everything before its last answer: the system prompt and the first turn
    turns, answer = split_last_answer(rows.column("system")[1].as_py(), rows.column("messages")[1].as_py())
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"] and answer.startswith("The quick")
    # an empty answer cannot be measured: the lowest score, counted
    assert np.isnan(scores.columns["ifd"][2].as_py()) and scores.values[2] == NO_ANSWER_SCORE
    assert scores.counts["ifd_no_answer"] == 1 and scores.values[2] < scores.values[:2].min()


def test_superfilterings_rule_puts_ifd_at_or_above_the_threshold_below_every_kept_row():
    conditioned = np.array([0.5, 2.0, 1.8, 3.0, np.nan])
    alone = np.array([1.0, 2.5, 1.2, 1.0, np.nan])  # IFD 0.5, 0.8, 1.5, 3.0, none
    ifd, score, dropped = ifd_scores(conditioned, alone, 1.0)
    assert ifd[:4] == pytest.approx([0.5, 0.8, 1.5, 3.0]) and list(dropped) == [False, False, True, True, False]
    assert list(np.argsort(-score)) == [1, 0, 2, 3, 4]  # high IFD first, then the dropped, nearest 1 first
    assert score[:2].min() > 0 > score[2] > score[3] > NO_ANSWER_SCORE == score[4]
    _, plain, _ = ifd_scores(conditioned, alone, None)  # no threshold: IFD alone
    assert list(np.argsort(-plain)) == [3, 2, 1, 0, 4]


def test_long_rows_are_cut_to_max_length_and_counted(tiny_lm, store):
    long_answer = " ".join(["the sea is wide and blue and deep"] * 40)
    rows = records_to_table([record([{"role": "user", "content": "Write a poem. " * 30},
                                     {"role": "assistant", "content": long_answer}])])
    params = scorers.parse_config({"scorer": "ifd", "model": str(tiny_lm), "max_length": 64})
    scores = scorers.get("ifd").open(ScorerInputs(store, params)).score(rows)
    assert scores.truncated == 1 and np.isfinite(scores.values).all()


def test_ifd_reads_the_base_model_stage_unless_a_model_is_given(tiny_lm, store):
    config = load_config(None, ["iqs.scorer=ifd"])
    [call] = get("iqs").calls(config)
    wanted = ("iqs_model", "embeddings", "base_model")
    assert [n for n in wanted if get("iqs").wants(n, call.params)] == ["base_model"]  # wired from its stage
    config = load_config(None, ["iqs.scorer=ifd", f"iqs.model={tiny_lm}"])
    assert not any(get("iqs").wants(n, get("iqs").calls(config)[0].params) for n in wanted)
    # the stage: base_model's folder in the store, per-row losses and counts in the output
    from tasks.stages.base_model import STAGE as BASE_MODEL
    from tasks.stages.base_model import BaseModelParams

    base = run_stage(BASE_MODEL, BaseModelParams(reference=str(tiny_lm)), {}, store).ref
    table = records_to_table([record([{"role": "user", "content": f"Question {i}?"},
                                      {"role": "assistant", "content": f"Answer number {i} is here."}], row=i)
                              for i in range(5)])
    conversations = store.publish_table("conv", "ingest", table)
    result = run_stage(get("iqs"), scorers.parse_config({"scorer": "ifd"}),
                       {"conversations": conversations, "base_model": base}, store)
    scored = store.read_table(result.ref.key)
    assert {"ifd", "ifd_conditioned_loss", "ifd_answer_loss"} <= set(scored.column_names)
    assert result.stats["model"] == base.key and set(result.stats["counts"]) == {"ifd_dropped", "ifd_no_answer"}
    assert result.stats["counts"]["ifd_dropped"] == int((scored.column("ifd").to_numpy() >= 1).sum())
