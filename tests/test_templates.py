"""Templates: exact texts of the well-known formats, and render() == the emitted Jinja chat_template."""
from __future__ import annotations

import json

import pytest

from tasks.errors import BadInputError
from tasks.templates import (
    BUILTIN,
    NoToolFormat,
    for_tokenizer,
    get_template,
    hf_messages,
    list_templates,
    render_jinja,
    template_messages,
    tool_definitions,
)
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
    with pytest.raises(BadInputError, match="role 'narrator'"):
        chatml.render(None, [{"role": "narrator", "content": "x"}])
    with pytest.raises(Exception, match="role narrator is not user, assistant or tool"):
        render_jinja(chatml.chat_template(), [{"role": "narrator", "content": "x"}], False, "", "")
    alpaca = get_template("alpaca")
    with pytest.raises(NoToolFormat, match="'alpaca' has no tool-calling format"):
        alpaca.render(None, [{"role": "tool", "content": "x"}])
    with pytest.raises(Exception, match="role tool is not user or assistant"):
        render_jinja(alpaca.chat_template(), [{"role": "tool", "content": "x"}], False, "", "")


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


# Tool calling, as canonical records hold it: tools as JSON text of function definitions, calls with arguments
# as JSON text, results as tool turns
AREA = {"name": "calculate_area", "description": "Area of a shape",
        "parameters": {"type": "object", "properties": {"shape": {"type": "string"},
                                                        "dimensions": {"type": "array", "items": {"type": "number"}}},
                       "required": ["shape", "dimensions"]}}
TOOLS = json.dumps([AREA, {"name": "convert", "description": "Units", "parameters": {"type": "object"}}])


def call(name: str, arguments: dict, call_id: str | None = None) -> dict:
    return {"id": call_id, "name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}


RECT = call("calculate_area", {"shape": "rectangle", "dimensions": [5, 3]})
TOOL_CONVERSATIONS = [
    (None, TOOLS, [{"role": "user", "content": "Area of a 5 by 3 rectangle?"},
                   {"role": "assistant", "content": "", "tool_calls": [RECT]},
                   {"role": "tool", "content": '{"area": 15}'},
                   {"role": "assistant", "content": "It is 15 square units."}]),
    ("Be brief.", TOOLS, [{"role": "user", "content": "Areas of a 5x3 rectangle and an r=4 circle?"},
                          {"role": "assistant", "content": "Computing both.",
                           "tool_calls": [RECT, call("calculate_area", {"shape": "circle", "dimensions": [4]}, "c2")]},
                          {"role": "tool", "content": '{"area": 15}'}, {"role": "tool", "content": '{"area": 50.24}'},
                          {"role": "assistant", "content": "15 and 50.24."},
                          {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You're welcome."}]),
    ("", None, [{"role": "user", "content": "Convert 1 km"},
                {"role": "assistant", "content": "", "tool_calls": [call("convert", {"km": 1, "to": "mi"})]},
                {"role": "tool", "content": "0.62"}, {"role": "assistant", "content": "0.62 miles."}]),
    (None, TOOLS, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]),
    (None, TOOLS, [{"role": "user", "content": "圆的面积？"},
                   {"role": "assistant", "content": "", "tool_calls": [call("calculate_area", {"shape": "圆"})]},
                   {"role": "tool", "content": '{"面积": 3}'}, {"role": "assistant", "content": "3"},
                   {"role": "user", "content": "{content} and {name}?"}]),
]
WITH_TOOLS = [t for t in BUILTIN if t.tools_format is not None]


def test_chatml_writes_tools_as_qwen3_does():
    text = get_template("chatml").render(None, TOOL_CONVERSATIONS[0][2], tools=json.dumps([AREA]))
    tool_json = json.dumps({"type": "function", "function": AREA})
    assert text == (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" + tool_json +
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
        "<args-json-object>}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\nArea of a 5 by 3 rectangle?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"calculate_area\", \"arguments\": {\"shape\": \"rectangle\", "
        "\"dimensions\": [5, 3]}}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n{\"area\": 15}\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nIt is 15 square units.<|im_end|>\n")
    # a system prompt comes first, a blank line before the tools; text before calls gets a newline, calls one each
    system, tools, messages = TOOL_CONVERSATIONS[1]
    text = get_template("chatml").render(system, messages, tools=tools)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert ("<|im_start|>assistant\nComputing both.\n<tool_call>\n{\"name\": \"calculate_area\", \"arguments\": "
            "{\"shape\": \"rectangle\", \"dimensions\": [5, 3]}}\n</tool_call>\n<tool_call>\n") in text
    assert ("<|im_start|>user\n<tool_response>\n{\"area\": 15}\n</tool_response>\n<tool_response>\n{\"area\": 50.24}\n"
            "</tool_response><|im_end|>\n") in text


def test_llama3_writes_tools_as_llama31_json_tool_calling():
    text = get_template("llama3").render(None, TOOL_CONVERSATIONS[0][2], tools=json.dumps([AREA]))
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond "
        "with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in "
        "the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use "
        "variables.\n\n" + json.dumps({"type": "function", "function": AREA}, indent=4) + "\n\n"
        "Area of a 5 by 3 rectangle?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        "{\"name\": \"calculate_area\", \"parameters\": {\"shape\": \"rectangle\", \"dimensions\": [5, 3]}}<|eot_id|>"
        "<|start_header_id|>ipython<|end_header_id|>\n\n{\"area\": 15}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 15 square units.<|eot_id|>")


@pytest.mark.parametrize("template", WITH_TOOLS, ids=lambda t: t.name)
def test_tool_render_equals_chat_template(template):
    assert {"chatml", "llama3"} <= {t.name for t in WITH_TOOLS}
    source = template.chat_template()
    for system, tools, messages in TOOL_CONVERSATIONS:
        for generation in (False, True):
            ours = template.render(system, messages, generation, bos_token="<BOS>", eos_token="<EOS>", tools=tools)
            theirs = render_jinja(source, hf_messages(system, messages), generation, "<BOS>", "<EOS>",
                                  tool_definitions(tools))
            assert theirs == ours, (system, messages)


@pytest.mark.parametrize("template", [t for t in BUILTIN if t.tools_format is None and not t.from_tokenizer],
                         ids=lambda t: t.name)
def test_templates_without_a_tool_format_refuse_tool_conversations(template):
    source = template.chat_template()
    for system, tools, messages in TOOL_CONVERSATIONS:
        with pytest.raises(NoToolFormat, match="no tool-calling format"):
            template.render(system, messages, tools=tools)
        with pytest.raises(Exception, match="no tool-calling format|is not user or assistant"):
            render_jinja(source, hf_messages(system, messages), False, "", "", tool_definitions(tools))
    template.render(None, CONVERSATIONS[1][1])  # no tools: as before


def test_tokenizer_template_renders_tools_through_the_models_chat_template(tiny_lm):
    """`tokenizer` passes tools= and the calls to the model's own chat_template; one that ignores them (the tiny
    model's plain ChatML, as SmolLM2's) is refused rather than trained on with the calls left out."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    with pytest.raises(NoToolFormat, match="ignores tool definitions"):
        for_tokenizer(get_template("tokenizer"), tok).render(None, TOOL_CONVERSATIONS[0][2], tools=TOOLS)
    with pytest.raises(NoToolFormat, match="drops the tool calls"):
        for_tokenizer(get_template("tokenizer"), tok).render(None, TOOL_CONVERSATIONS[2][2])
    chatml = get_template("chatml")
    tok.chat_template = chatml.chat_template()  # a model whose chat_template has a tool format
    bound = for_tokenizer(get_template("tokenizer"), tok)
    for system, tools, messages in TOOL_CONVERSATIONS:
        ours = bound.render(system, messages, tools=tools)
        assert ours == chatml.render(system, messages, tools=tools)
        assert ours == tok.apply_chat_template(hf_messages(system, messages), tools=tool_definitions(tools) or None,
                                               tokenize=False)
