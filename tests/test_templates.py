"""Templates: exact texts of the well-known formats, and render() == the emitted Jinja chat_template."""
from __future__ import annotations

import pytest

from tasks.errors import BadInputError
from tasks.templates import BUILTIN, for_tokenizer, get_template, list_templates, render_jinja, template_messages
from tasks.text import alpaca_user_content

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)

CONVERSATIONS = [
    (None, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]),
    ("Be brief.", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "Name three colours."},
                   {"role": "assistant", "content": "Red, green\nand blue."}]),
    ("", [{"role": "user", "content": "Sum these", "input": "1 2"}, {"role": "assistant", "content": "3"}]),
    (None, [{"role": "user", "content": "Sum these", "input": "1 2"}, {"role": "assistant", "content": "3"},
            {"role": "user", "content": "And {eos} times '2'?"}, {"role": "assistant", "content": "6 \"six\""},
            {"role": "user", "content": "你好"}]),
    ("System with {system} braces", [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]),
    (None, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
            {"role": "user", "content": "e"}, {"role": "assistant", "content": "f"}]),
]


def test_registry_has_the_required_templates():
    required = {"alpaca", "llama2", "linly", "openllm", "yayi", "stablebeluga2", "guanaco", "chatml", "vicuna",
                "llama3", "tokenizer"}
    assert required <= set(list_templates())
    with pytest.raises(BadInputError, match="unknown template"):
        get_template("nope")


def test_alpaca_is_stanford_prompt_dict_exactly():
    alpaca = get_template("alpaca")
    turns = [{"role": "user", "content": "Give tips."}, {"role": "assistant", "content": "Eat."}]
    no_input = alpaca.render(None, turns, eos_token="</s>")
    assert no_input == ALPACA_PROMPT_NO_INPUT.format(instruction="Give tips.") + "Eat.</s>"
    meta = {"instruction": "Translate.", "input": "Bonjour"}
    turns = template_messages([{"role": "user", "content": alpaca_user_content("Translate.", "Bonjour")},
                               {"role": "assistant", "content": "Hello"}], meta)
    assert turns[0] == {"role": "user", "content": "Translate.", "input": "Bonjour"}
    text = alpaca.render(None, turns, eos_token="</s>")
    assert text == ALPACA_PROMPT_INPUT.format(instruction="Translate.", input="Bonjour") + "Hello</s>"
    # the generation prompt is the Stanford source text (what the model sees at inference)
    assert alpaca.render(None, turns[:1], add_generation_prompt=True) == \
        ALPACA_PROMPT_INPUT.format(instruction="Translate.", input="Bonjour")


def test_template_messages_leaves_non_alpaca_rows_alone():
    msgs = [{"role": "user", "content": "Translate.\n\nBonjour"}, {"role": "assistant", "content": "Hello"}]
    assert template_messages(msgs, {"instruction": "Other.", "input": "Bonjour"}) == msgs
    assert template_messages(msgs, "{}") == msgs
    # other templates fold the input back into the same user text
    chatml = get_template("chatml")
    split = template_messages(msgs, {"instruction": "Translate.", "input": "Bonjour"})
    assert chatml.render(None, split) == chatml.render(None, msgs)


def test_known_formats():
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]
    assert get_template("chatml").render("S", conv) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nSee you.<|im_end|>\n")
    assert get_template("llama2").render("S", conv, bos_token="<s>", eos_token="</s>") == (
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST] See you. </s>")
    assert get_template("vicuna").render("S", conv, eos_token="</s>") == \
        "S USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT: See you.</s>"
    assert get_template("vicuna").render("S", conv[:1], add_generation_prompt=True) == "S USER: Hi ASSISTANT:"
    assert get_template("guanaco").render(None, conv[:1], add_generation_prompt=True) == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions.\n### Human: Hi ### Assistant: ")
    assert get_template("llama3").render(None, conv[:2]) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")
    assert get_template("llama2").default_system.startswith("You are a helpful, respectful and honest assistant.")
    assert "\n\n### Assistant:\n" in get_template("stablebeluga2").render(None, conv)


@pytest.mark.parametrize("template", [t for t in BUILTIN if not t.from_tokenizer], ids=lambda t: t.name)
def test_render_equals_chat_template(template):
    source = template.chat_template()
    for system, messages in CONVERSATIONS:
        for generation in (False, True):
            ours = template.render(system, messages, generation, bos_token="<BOS>", eos_token="<EOS>")
            hf_messages = ([{"role": "system", "content": system}] if system is not None else []) + messages
            assert render_jinja(source, hf_messages, generation, "<BOS>", "<EOS>") == ours, (system, messages)


def test_chat_template_through_a_real_tokenizer(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    for template in (get_template("alpaca"), get_template("llama2"), get_template("chatml")):
        system, messages = CONVERSATIONS[1]
        text = tok.apply_chat_template([{"role": "system", "content": system}] + messages, tokenize=False,
                                       chat_template=template.chat_template())
        assert text == template.render(system, messages, bos_token=tok.bos_token, eos_token=tok.eos_token)


def test_bad_roles_are_rejected_both_ways():
    chatml = get_template("chatml")
    with pytest.raises(BadInputError, match="role 'tool'"):
        chatml.render(None, [{"role": "tool", "content": "x"}])
    with pytest.raises(Exception, match="role tool"):
        render_jinja(chatml.chat_template(), [{"role": "tool", "content": "x"}], False, "", "")


def test_tokenizer_template_must_be_bound(tiny_lm):
    from transformers import AutoTokenizer

    unbound = get_template("tokenizer")
    with pytest.raises(BadInputError, match="for_tokenizer"):
        unbound.render(None, CONVERSATIONS[0][1])
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    bound = for_tokenizer(unbound, tok)
    assert bound.chat_template() == tok.chat_template
    system, messages = CONVERSATIONS[1]
    assert bound.render(system, messages) == tok.apply_chat_template(
        [{"role": "system", "content": system}] + messages, tokenize=False)
