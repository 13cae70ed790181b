"""Prompt sets and the `generate` stage on the tiny LM: the named sets read as the field uses them, a user's file
in any format ingest reads, batched answers equal to one-at-a-time greedy decoding, parts, bad input."""
from __future__ import annotations

import json

import pytest

from flows.plan import run_alone
from tasks.errors import BadInputError
from tasks.prompts import PROMPT_SETS
from tasks.stages import get
from tasks.stages.base_model import BaseModelParams
from tasks.stages.generate import GenerateConfig
from tasks.stages.prompts import PromptSetConfig

SIZES = {"alpacaeval": 805, "vicuna": 80, "koala": 180, "wizardlm": 218, "sinstruct": 252, "lima": 300}


def test_the_named_prompt_sets_are_the_published_ones(store, shared_data):
    assert set(PROMPT_SETS) == set(SIZES)
    for name, size in SIZES.items():
        result = run_alone(get("prompts"), PromptSetConfig(set=name), {}, store)
        table = store.read_table(result.ref.key)
        assert table.num_rows == size and result.stats["quarantined"] == 0, name
        first = table.column("messages")[0].as_py()
        assert [m["role"] for m in first] == ["user"] and first[0]["content"].strip()
        assert json.loads(table.column("meta")[0].as_py())["prompt_set"] == name
    sinstruct = store.read_table(run_alone(get("prompts"), PromptSetConfig(set="sinstruct"), {}, store).ref.key)
    first = sinstruct.column("messages")[0].as_py()[0]["content"]
    assert first.startswith("The sentence you are given might be too wordy") and "If you have any questions" in first


def test_a_users_prompt_file_in_any_format(store, tmp_path):
    records = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},  # alpaca, answered
               {"instruction": "Add the numbers.", "input": "2 and 3"},  # alpaca without an answer
               {"messages": [{"role": "user", "content": "Hi there?"}]},  # openai, unanswered
               {"conversations": [{"from": "human", "value": "Tell a joke."}]},  # sharegpt, unanswered
               {"prompt": "Why is the sky blue?"}, {"question": "What is 2+2?"},
               {"nothing": "here"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    result = run_alone(get("prompts"), PromptSetConfig(path=str(path)), {}, store)
    prompts = [m[0]["content"] for m in store.read_table(result.ref.key).column("messages").to_pylist()]
    assert prompts == ["Name a colour.", "Add the numbers.\n\n2 and 3", "Hi there?", "Tell a joke.",
                       "Why is the sky blue?", "What is 2+2?"]
    quarantine = store.read_table(store.manifest(result.ref.key)["companions"]["quarantine"])
    assert quarantine.to_pylist() == [{"row": 6, "reason": "no_user_turn", "detail": quarantine["detail"][0].as_py()}]
    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"nothing": "here"}))
    with pytest.raises(BadInputError, match="no prompt in 1 record"):
        run_alone(get("prompts"), PromptSetConfig(path=str(empty)), {}, store)
    with pytest.raises(ValueError, match="no prompt set 'mtbench'"):  # the config's validation says it
        PromptSetConfig(set="mtbench")


def test_the_held_out_questions_are_a_prompt_set_of_the_ablation(ablation_config):
    """`heldout`: the questions of eval.holdout's rows (the user's own data, never trained on), each keeping the
    held-out row's id and source; planned where the held-out split is, bad input where it is not."""
    from flows.ablation import ablation_plan, grid
    from flows.plan import run_in_order

    config = ablation_config(generate={"prompts": ["heldout"], "max_new_tokens": 4})
    plan = ablation_plan(config, 8, arms=grid(["random"], 1)).plan
    asked = plan.named("prompts[heldout]", "prompts")[0]
    held = plan.named("eval.holdout", "eval.holdout")[0]
    assert asked.inputs == {"eval_set": held} and asked.params.held_out and asked.fingerprint is None
    results = run_in_order(plan.needed_by([asked]))
    rows = plan.store.read_table(results["eval.holdout"].ref.key).to_pylist()
    prompts = plan.store.read_table(results["prompts[heldout]"].ref.key).to_pylist()
    assert [json.loads(p["meta"])["held_out_id"] for p in prompts] == [r["id"] for r in rows]
    assert [p["messages"][0]["content"] for p in prompts] == [r["messages"][0]["content"] for r in rows]
    assert all(p["source"]["uri"] == r["source"]["uri"] for p, r in zip(prompts, rows))
    with pytest.raises(BadInputError, match="plan them where eval.holdout runs"):
        run_alone(get("prompts"), PromptSetConfig(held_out=True), {}, plan.store)
    with pytest.raises(ValueError, match="one"):
        PromptSetConfig(set="vicuna", held_out=True)



def test_held_out_prompts_are_also_judged_against_the_held_out_rows_own_answers(ablation_config):
    """`references`: each held-out question's own answer (an expert's, on MedicationQA), laid out as generate's
    output over the same prompts; every arm, random included, is judged against them. A prompt set that is not the
    held-out rows' has no references (bad input)."""
    from flows.ablation import ablation_plan, grid
    from flows.plan import run_in_order
    from tasks.stages.judge import answer_rows
    from tasks.stages.references import reference_answer

    config = ablation_config(generate={"prompts": ["heldout"], "max_new_tokens": 4})
    plan = ablation_plan(config, 8, arms=grid(["longest", "random"], 1)).plan
    written = plan.named("references[heldout]", "references")[0]
    assert plan.named("judge[random/0/heldout vs reference]", "judge")[0].inputs["baseline"] is written
    assert {"judge[longest/0/heldout]", "judge[longest/0/heldout vs reference]"} <= {s.label for s in plan.steps}
    results = run_in_order(plan.needed_by([written]))
    store = plan.store
    rows = {r["id"]: r for r in store.read_table(results["eval.holdout"].ref.key).to_pylist()}
    prompts = store.read_table(results["prompts[heldout]"].ref.key).to_pylist()
    answers, asked = answer_rows(store, results["references[heldout]"].ref.key)
    assert asked == results["prompts[heldout]"].ref.key and set(answers) == {p["id"] for p in prompts}
    for prompt in prompts:
        row = rows[json.loads(prompt["meta"])["held_out_id"]]
        assert answers[prompt["id"]] == (row["messages"][0]["content"], row["messages"][1]["content"])
    assert reference_answer([{"role": "user", "content": "a?"}, {"role": "assistant", "content": "A."},
                             {"role": "user", "content": "b?"}, {"role": "assistant", "content": "B."}]) == "A."
    assert reference_answer([{"role": "user", "content": "a?"}, {"role": "user", "content": "b?"},
                             {"role": "assistant", "content": "B."}]) is None
    other = run_alone(get("prompts"), PromptSetConfig(set="vicuna", limit=3), {}, store).ref
    with pytest.raises(BadInputError, match="names no held-out row"):
        run_alone(get("references"), PromptSetConfig(held_out=True),
                  {"prompts": other.key, "eval_set": results["eval.holdout"].ref.key}, store)



def test_alpacaeval_carries_gpt4_turbos_answers_as_its_references(ablation_config, store):
    """AlpacaEval's prompts hold its leaderboard's reference (GPT-4-turbo's answers in our copy): every arm is judged
    against them too; a set without references (Vicuna) plans none and cannot be given one."""
    from flows.ablation import ablation_plan, grid

    plan = ablation_plan(ablation_config(generate={"prompts": ["alpacaeval", "vicuna"]}), 8,
                         arms=grid(["longest", "random"], 1)).plan
    labels = {s.label for s in plan.steps}
    assert {"references[alpacaeval]", "judge[random/0/alpacaeval vs reference]"} <= labels
    assert not {label for label in labels if "vicuna" in label and "reference" in label}
    entry = PromptSetConfig(set="alpacaeval", limit=5)
    prompts = run_alone(get("prompts"), entry, {}, store).ref
    result = run_alone(get("references"), entry, {"prompts": prompts.key}, store)
    assert result.stats["taken_from"] == {"reference_output": 5}
    for row in store.read_table(result.ref.key).to_pylist():
        meta = json.loads(row["meta"])
        assert row["messages"][1]["content"] == meta["reference_output"] and row["generator"] == "reference"
    vicuna = PromptSetConfig(set="vicuna", limit=2)
    with pytest.raises(BadInputError, match="no reference answer"):
        run_alone(get("references"), vicuna, {"prompts": run_alone(get("prompts"), vicuna, {}, store).ref.key}, store)


def test_alpacaevals_public_layout_gives_davinci_003s_answers_as_references(store, tmp_path, monkeypatch):
    """The public file (AlpacaEval 1.0's layout: instruction, output, generator) has text-davinci-003's answers in
    `output`, which ingest reads as the answer and the prompts table does not keep: the references read the file."""
    import gzip

    folder = tmp_path / "sets"
    (folder / "alpacaeval").mkdir(parents=True)
    rows = [{"instruction": "Say hi.", "output": "Hi there!", "generator": "text_davinci_003", "dataset": "x"},
            {"instruction": "Name a fruit.", "output": "Apple.", "generator": "text_davinci_003", "dataset": "y"}]
    with gzip.open(folder / "alpacaeval" / "prompts.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    monkeypatch.setenv("SFTFLOW_PROMPT_SETS", str(folder))
    entry = PromptSetConfig(set="alpacaeval")
    prompts = run_alone(get("prompts"), entry, {}, store).ref
    result = run_alone(get("references"), entry, {"prompts": prompts.key}, store)
    assert result.stats["taken_from"] == {"output": 2}
    table = store.read_table(result.ref.key).to_pylist()
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in table] == [
        ("Say hi.", "Hi there!"), ("Name a fruit.", "Apple.")]


def test_batched_answers_are_one_at_a_time_greedy_decoding(store, tiny_confident_lm):
    """Left-padded batches of similar prompt length with the KV cache give each prompt the answer
    `model.generate` gives it alone; parts give the same table; the sampling parameters are in the key."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generate import encode_prompt, render_prompt

    base = run_alone(get("base_model"), BaseModelParams(reference=str(tiny_confident_lm)), {}, store).ref
    prompts = run_alone(get("prompts"), PromptSetConfig(set="vicuna", limit=7), {}, store).ref
    params = GenerateConfig(max_new_tokens=10, batch_size=3, part_rows=0)
    result = run_alone(get("generate"), params, {"prompts": prompts.key, "base_model": base.key}, store)
    table = store.read_table(result.ref.key)
    assert table.num_rows == 7 and result.stats["tokens"] == sum(table.column("new_tokens").to_pylist())
    assert set(table.column("finish_reason").to_pylist()) <= {"stop", "length"}
    assert table.column("generator").to_pylist() == [base.key] * 7
    model = AutoModelForCausalLM.from_pretrained(tiny_confident_lm).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_confident_lm)
    for messages in table.column("messages").to_pylist():
        batch = encode_prompt(tokenizer, render_prompt(tokenizer, messages[0]["content"]))
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        alone = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert messages[1]["content"] == alone
    in_parts = run_alone(get("generate"), params.model_copy(update={"part_rows": 3}),
                         {"prompts": prompts.key, "base_model": base.key}, store, force=True)
    assert in_parts.ref.key == result.ref.key and store.read_table(in_parts.ref.key).equals(table)
    sampled = get("generate").key(params.model_copy(update={"temperature": 0.7}), {"prompts": prompts.key,
                                                                                  "base_model": base.key})
    assert sampled != result.ref.key
    assert get("generate").key(params.model_copy(update={"batch_size": 7}), {"prompts": prompts.key,
                                                                            "base_model": base.key}) == result.ref.key
    with pytest.raises(BadInputError, match="needs a model"):
        run_alone(get("generate"), params, {"prompts": prompts.key}, store)


def test_a_finished_row_leaves_the_batch_and_the_others_answer_as_alone(tiny_lm):
    """Greedy rows that end their turn leave the batch (the forward passes shrink), and every row still gets
    `model.generate`'s answer alone, with and without an adapter's wrapping."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generate import encode_prompt, greedy_decode, render_prompt

    def talkative():  # the tiny LM's weights at a larger scale: answers that vary with the prompt
        model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            for weight in (p for p in model.parameters() if p.dim() == 2):
                weight.normal_(0, 0.3)
        return model

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    prompts = ["Name three rivers in Europe and say where each begins.", "Why is the sky blue?",
               "Write a haiku about autumn leaves.", "What is 12 times 7?"]
    encoded = [encode_prompt(tokenizer, render_prompt(tokenizer, p))["input_ids"][0] for p in prompts]
    model = talkative()

    def alone(ends: set[int]) -> list[list[int]]:
        answers = []
        for ids in encoded:
            with torch.no_grad():
                out = model.generate(input_ids=ids[None], attention_mask=torch.ones_like(ids[None]),
                                     max_new_tokens=12, do_sample=False, eos_token_id=sorted(ends),
                                     pad_token_id=tokenizer.eos_token_id)
            answers.append(out[0, len(ids):].tolist())
        return answers

    free = alone({tokenizer.eos_token_id})
    ends = {free[0][2], free[2][6]}  # the first prompt ends by its third token, the third by its seventh
    expected = alone(ends)
    assert len(expected[0]) <= 3 and len(expected[2]) <= 7 and max(len(a) for a in expected) == 12
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.eos_token_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):], attention[row, width - len(ids):] = ids, 1
    lora = get_peft_model(talkative(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    for decoder in (model, lora):  # an untrained adapter (B = 0) leaves the answers as they were
        rows_seen: list[int] = []
        handle = decoder.get_input_embeddings().register_forward_hook(
            lambda _m, args, _o, seen=rows_seen: seen.append(args[0].shape[0]))
        with torch.inference_mode():
            answers = greedy_decode(decoder, input_ids, attention, 12, ends)
        handle.remove()
        assert answers == expected
        assert rows_seen[:2] == [4, 4] and rows_seen[-1] < 4 and rows_seen == sorted(rows_seen, reverse=True)


def test_answers_export_for_the_official_evaluators(store, tiny_confident_lm, tmp_path, capsys):
    """AlpacaEval's model_outputs.json and FastChat's answer JSONL, so a user with an API key runs them."""
    from flows.cli import main

    base = run_alone(get("base_model"), BaseModelParams(reference=str(tiny_confident_lm)), {}, store).ref
    prompts = run_alone(get("prompts"), PromptSetConfig(set="alpacaeval", limit=3), {}, store).ref
    answers = run_alone(get("generate"), GenerateConfig(max_new_tokens=4), {"prompts": prompts.key,
                                                                            "base_model": base.key}, store).ref
    assert main(["export", answers.key, "--store", store.url, "--to", f"alpacaeval:{tmp_path / 'outputs.json'}",
                 "--to", f"fastchat:{tmp_path / 'answers.jsonl'}", "--json"]) == 0
    capsys.readouterr()
    outputs = json.loads((tmp_path / "outputs.json").read_text())
    assert [o["instruction"][:30] for o in outputs] == [
        "What are the names of some fam", "How did US states get their na", "Hi, my sister and her girlfrie"]
    assert {o["generator"] for o in outputs} == {base.key} and {o["dataset"] for o in outputs} == {"helpful_base"}
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [line["question_id"] for line in lines] == ["alpacaeval-000", "alpacaeval-001", "alpacaeval-002"]
    assert all(len(line["choices"][0]["turns"]) == 1 for line in lines)
