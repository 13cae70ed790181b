"""Prompt templates as data: each names its system, user and assistant formats, separators, default system
prompt and stop strings. One renderer turns any template into text (with the character spans of every
assistant turn, for loss masking) and into an equivalent Jinja `chat_template` for the tokenizer a training
run saves, so inference sees exactly the format training used.

Placeholders in the formats: `{system}`, `{content}`, `{instruction}`, `{input}` (Alpaca-style user turns
with an input), `{bos}` and `{eos}` (the tokenizer's BOS/EOS tokens; `bos_token`/`eos_token` in Jinja).

An assistant turn is `assistant_prefix` (the generation prompt) + `assistant_lead` + content + `assistant_end`
(supervised with the content: the model must learn to stop) + `assistant_suffix`. `turn_separator` goes
before every user turn but the first. `stop` lists strings a generator should also stop on.

Tool calling (templates with a `tools_format`: chatml as Qwen3 writes it, llama3 as Llama 3.1's JSON tool
calling): the tool definitions (`{tools}`: each as OpenAI's `{"type": "function", "function": …}` JSON) go into
the system prompt or the first user turn; an assistant turn's calls (`{name}`, `{arguments}`) follow its text
and are supervised with it; a run of tool results is `tool_results_prefix` + each result + `tool_results_suffix`
and never supervised. A template without a tool format refuses such conversations (NoToolFormat), and so does
`tokenizer` when the model's chat_template ignores the tools or the calls.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import BadInputError
from tasks.text import alpaca_user_content

PLACEHOLDER = re.compile(r"\{(system|content|instruction|input|bos|eos|tools|name|arguments)\}")
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe. "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
# Kinds of rendered pieces; which of them carry loss is decided by tokenize.py (`train_on`).
MARKUP, SYSTEM, USER, ASSISTANT, END = "markup", "system", "user", "assistant", "end"
TOOL_CALL, TOOL = "tool_call", "tool"  # an assistant turn's calls (supervised with it), a tool result (never)


class NoToolFormat(BadInputError):
    """The conversation has tool definitions, calls or results and the template cannot render them."""


class Template(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    source: str = Field("", description="where the format comes from")
    prefix: str = Field("", description="text at the very start, e.g. '{bos}'")
    system_format: str = "{system}"
    system_position: Literal["prefix", "first_user"] = Field(
        "prefix", description="prefix: before the first turn; first_user: prepended to the first user content")
    default_system: str | None = None
    user_format: str = "{content}"
    input_user_format: str | None = Field(
        None, description="user format when the turn has an Alpaca input ({instruction}, {input})")
    input_default_system: str | None = Field(None, description="default system when the first turn has an input")
    turn_separator: str = ""
    assistant_prefix: str = ""
    assistant_lead: str = Field("", description="markup between the generation prompt and the answer, e.g. ' '")
    assistant_end: str = "{eos}"
    assistant_suffix: str = ""
    stop: tuple[str, ...] = Field((), description="stop strings for generation besides the EOS token")
    default_bos: str = "<s>"
    default_eos: str = "</s>"
    tools_format: str | None = Field(None, description="the tool definitions block ({tools}); none: the template "
                                                       "has no tool format and refuses tool conversations")
    tools_position: Literal["system", "first_user"] = Field(
        "system", description="system: after the system prompt (a blank line between); first_user: before the "
                              "first user turn's content")
    tool_json_indent: int | None = Field(None, description="JSON indent of each tool definition (none: one line)")
    tools_separator: str = Field("\n", description="between two tool definitions")
    tool_call_format: str = Field("", description="one call of an assistant turn ({name}, {arguments})")
    tool_call_lead: str = Field("\n", description="between an assistant turn's text and its first call")
    tool_call_separator: str = Field("\n", description="between two calls")
    tool_result_format: str = Field("{content}", description="one tool result")
    tool_results_prefix: str = Field("", description="before a run of consecutive tool results")
    tool_results_suffix: str = Field("", description="after it")
    jinja: str | None = Field(None, description="a Jinja chat_template rendered instead of the formats (`tokenizer`)")
    from_tokenizer: bool = Field(False, description="the Jinja comes from the model's tokenizer (see for_tokenizer)")

    # -- rendering ------------------------------------------------------------------------------------
    def render(self, system: str | None, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
               *, bos_token: str | None = None, eos_token: str | None = None, tools: Any = None) -> str:
        """The exact text a model sees. `system=None` uses the default system prompt, `""` none at all; `tools`
        are the record's tool definitions (JSON text or a list)."""
        pieces = self.render_pieces(system, messages, add_generation_prompt, bos_token=bos_token, eos_token=eos_token,
                                    tools=tools)
        return "".join(p.text for p in pieces)

    def render_pieces(self, system: str | None, messages: Sequence[Mapping[str, Any]],
                      add_generation_prompt: bool = False, *, bos_token: str | None = None,
                      eos_token: str | None = None, tools: Any = None) -> list[Piece]:
        self._require_bound()
        bos = self.default_bos if bos_token is None else bos_token
        eos = self.default_eos if eos_token is None else eos_token
        tool_defs = tool_definitions(tools)
        if self.jinja is not None:
            return _jinja_pieces(self.jinja, system, messages, add_generation_prompt, bos, eos, tool_defs)
        self._require_tool_format(tool_defs, messages)
        fill = _filler(bos, eos)
        pieces: list[Piece] = []
        first_input = bool(messages and messages[0].get("role") == "user" and messages[0].get("input"))
        if system is None:
            system = self.input_default_system if first_input and self.input_default_system else self.default_system
        tools_text = self._tools_text(tool_defs, fill)
        if tools_text and self.tools_position == "system":
            system = f"{system}\n\n{tools_text}" if system else tools_text
        system_text = fill(self.system_format, system=system) if system else ""
        if self.prefix:
            pieces.append(Piece(fill(self.prefix), MARKUP))
        if system_text and self.system_position == "prefix":
            pieces.append(Piece(system_text, SYSTEM))
        seen_user = False
        for turn, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if not isinstance(content, str):
                raise BadInputError("message content must be a string", row=turn, field="content")
            if role == "user":
                if seen_user and self.turn_separator:
                    pieces.append(Piece(fill(self.turn_separator), MARKUP))
                lead = "" if seen_user else ((system_text if self.system_position == "first_user" else "")
                                             + (tools_text if self.tools_position == "first_user" else ""))
                if message.get("input") and self.input_user_format is not None:
                    text = fill(self.input_user_format, instruction=lead + content, input=message["input"])
                else:
                    text = fill(self.user_format, content=lead + alpaca_user_content(content, message.get("input")))
                pieces.append(Piece(text, USER, turn))
                seen_user = True
            elif role == "assistant":
                pieces.append(Piece(fill(self.assistant_prefix + self.assistant_lead), MARKUP, turn))
                pieces.append(Piece(content, ASSISTANT, turn))
                if message.get("tool_calls"):
                    pieces.append(Piece(self._calls_text(content, message["tool_calls"], fill), TOOL_CALL, turn))
                pieces.append(Piece(fill(self.assistant_end), END, turn))
                pieces.append(Piece(fill(self.assistant_suffix), MARKUP, turn))
            elif role == "tool":
                if turn == 0 or messages[turn - 1].get("role") != "tool":
                    pieces.append(Piece(fill(self.tool_results_prefix), MARKUP, turn))
                pieces.append(Piece(fill(self.tool_result_format, content=content), TOOL, turn))
                if turn == len(messages) - 1 or messages[turn + 1].get("role") != "tool":
                    pieces.append(Piece(fill(self.tool_results_suffix), MARKUP, turn))
            else:
                raise BadInputError(f"role {role!r} is not user, assistant or tool (the system prompt is separate)",
                                    row=turn, field="role")
        if add_generation_prompt:
            pieces.append(Piece(fill(self.assistant_prefix), MARKUP))
        return [p for p in pieces if p.text]

    def _require_tool_format(self, tool_defs: list[dict[str, Any]], messages: Sequence[Mapping[str, Any]]) -> None:
        if self.tools_format is None and (tool_defs or any(m.get("role") == "tool" or m.get("tool_calls")
                                                           for m in messages)):
            with_tools = ", ".join(t.name for t in BUILTIN if t.tools_format is not None)
            raise NoToolFormat(f"template {self.name!r} has no tool-calling format and this conversation has tool "
                               f"definitions, calls or results: use {with_tools}, or tokenizer with a model whose "
                               "chat_template takes tools", field="template")

    def _tools_text(self, tool_defs: list[dict[str, Any]], fill: Any) -> str:
        if not tool_defs:
            return ""
        listed = self.tools_separator.join(json.dumps(t, ensure_ascii=False, indent=self.tool_json_indent)
                                           for t in tool_defs)
        return fill(self.tools_format, tools=listed)

    def _calls_text(self, content: str, calls: Sequence[Mapping[str, Any]], fill: Any) -> str:
        texts = [fill(self.tool_call_format, name=c["name"], arguments=json.dumps(json.loads(c["arguments"]),
                                                                                   ensure_ascii=False))
                 for c in calls]
        return (self.tool_call_lead if content else "") + self.tool_call_separator.join(texts)

    # -- Jinja ----------------------------------------------------------------------------------------
    def chat_template(self) -> str:
        """An equivalent Jinja chat_template (HF conventions: system as messages[0], bos_token, eos_token, `tools`
        as OpenAI function definitions, assistant `tool_calls` as `{function: {name, arguments}}`)."""
        self._require_bound()
        if self.jinja is not None:
            return self.jinja
        s = _jinja_string

        def out(fmt: str, **exprs: str) -> str:
            return "{{- " + _jinja_concat(fmt, exprs) + " -}}" if fmt else ""

        default = s(self.default_system or "")
        if self.input_default_system:
            default = (f"{s(self.input_default_system)} if (loop_messages and loop_messages[0]['input'] is defined "
                       f"and loop_messages[0]['input']) else {default}")
        system_text = _jinja_concat(self.system_format, {"system": "system"})
        content = "message['content']"
        if self.tools_format is not None and self.tools_position == "first_user":
            content = f"(tools_text if not ns.seen_user else '') + {content}"
        if self.system_position == "first_user":
            content = f"(ns.system_text if not ns.seen_user else '') + {content}"
        has_input = "message['input'] is defined and message['input']"
        folded = f"{content} + ('\\n\\n' + message['input'] if {has_input} else '')"
        parts = [
            "{%- if messages and messages[0]['role'] == 'system' -%}",
            "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}",
            "{%- else -%}",
            f"{{%- set loop_messages = messages -%}}{{%- set system = {default} -%}}",
            "{%- endif -%}",
            *self._jinja_tools(),
            f"{{%- set ns = namespace(seen_user=false, system_text=({system_text} if system else '')) -%}}",
            out(self.prefix),
            "{{- ns.system_text -}}" if self.system_position == "prefix" else "",
            "{%- for message in loop_messages -%}",
            "{%- if message['role'] == 'user' -%}",
            f"{{%- if ns.seen_user -%}}{out(self.turn_separator)}{{%- endif -%}}" if self.turn_separator else "",
        ]
        if self.input_user_format is not None:
            parts += [
                f"{{%- if {has_input} -%}}",
                out(self.input_user_format, instruction=content, input="message['input']"),
                "{%- else -%}", out(self.user_format, content=content), "{%- endif -%}",
            ]
        else:
            parts.append(out(self.user_format, content=folded))
        parts += [
            "{%- set ns.seen_user = true -%}",
            "{%- elif message['role'] == 'assistant' -%}",
            out(self.assistant_prefix + self.assistant_lead + "{content}", content="message['content']"),
            *self._jinja_calls(out),
            out(self.assistant_end + self.assistant_suffix),
            *self._jinja_results(out),
            f"{{%- else -%}}{{{{- raise_exception('role ' + message['role'] + ' is not "
            f"{'user, assistant or tool' if self.tools_format is not None else 'user or assistant'}') -}}}}",
            "{%- endif -%}",
            "{%- endfor -%}",
            f"{{%- if add_generation_prompt -%}}{out(self.assistant_prefix)}{{%- endif -%}}"
            if self.assistant_prefix else "",
        ]
        return "\n".join(p for p in parts if p)

    def _refusal(self) -> str:
        return "{{- raise_exception(" + _jinja_string(f"template {self.name!r} has no tool-calling format") + ") -}}"

    def _jinja_tools(self) -> list[str]:
        """`tools_text` (the definitions block) and, for the system position, the system prompt it extends."""
        if self.tools_format is None:
            return ["{%- if tools -%}" + self._refusal() + "{%- endif -%}"]
        indent = f", indent={self.tool_json_indent}" if self.tool_json_indent is not None else ""
        listed = f"(tools | map('tojson'{indent}) | join({_jinja_string(self.tools_separator)}))"
        lines = ["{%- if tools -%}{%- set tools_text = " + _jinja_concat(self.tools_format, {"tools": listed})
                 + " -%}{%- else -%}{%- set tools_text = '' -%}{%- endif -%}"]
        if self.tools_position == "system":
            lines.append("{%- if tools_text -%}{%- set system = (system + '\\n\\n' + tools_text) if system "
                         "else tools_text -%}{%- endif -%}")
        return lines

    def _jinja_calls(self, out: Any) -> list[str]:
        has_calls = "{%- if message['tool_calls'] is defined and message['tool_calls'] -%}"
        if self.tools_format is None:
            return [has_calls + self._refusal() + "{%- endif -%}"]
        return [
            has_calls, "{%- for call in message['tool_calls'] -%}",
            "{%- set fn = call['function'] if call['function'] is defined else call -%}",
            f"{{%- if not loop.first -%}}{out(self.tool_call_separator)}"
            f"{{%- elif message['content'] -%}}{out(self.tool_call_lead)}{{%- endif -%}}",
            out(self.tool_call_format, name="fn['name']", arguments="(fn['arguments'] | tojson)"),
            "{%- endfor -%}", "{%- endif -%}",
        ]

    def _jinja_results(self, out: Any) -> list[str]:
        if self.tools_format is None:
            return []
        return [
            "{%- elif message['role'] == 'tool' -%}",
            f"{{%- if loop.first or loop.previtem['role'] != 'tool' -%}}{out(self.tool_results_prefix)}{{%- endif -%}}",
            out(self.tool_result_format, content="message['content']"),
            f"{{%- if loop.last or loop.nextitem['role'] != 'tool' -%}}{out(self.tool_results_suffix)}{{%- endif -%}}",
        ]

    def _require_bound(self) -> None:
        if self.from_tokenizer and self.jinja is None:
            raise BadInputError(f"template {self.name!r} is the model's own chat_template: load a tokenizer and bind "
                                "it with for_tokenizer(template, tokenizer) first", field="template")

    def summary(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Piece(NamedTuple):
    text: str
    kind: str  # MARKUP, SYSTEM, USER, ASSISTANT or END
    turn: int = -1  # index of the message it belongs to


@lru_cache(maxsize=1024)
def _format_parts(fmt: str, bos: str, eos: str) -> tuple[str, ...]:
    """`fmt` with {bos} and {eos} filled in, split at its other placeholders: literal text at even indexes,
    placeholder names at odd ones (formats are few; rendering a row then only joins strings)."""
    parts = PLACEHOLDER.split(fmt)
    out = [parts[0]]
    for name, literal in zip(parts[1::2], parts[2::2]):
        if name in ("bos", "eos"):
            out[-1] += (bos if name == "bos" else eos) + literal
        else:
            out += [name, literal]
    return tuple(out)


def fill_special_tokens(fmt: str, bos: str, eos: str) -> str:
    """A format with its {bos} and {eos} filled in (its other placeholders left as they are)."""
    return _filler(bos, eos)(fmt)


def _filler(bos: str, eos: str):
    def fill(fmt: str, **values: str) -> str:
        # one pass: placeholders inside inserted content are never expanded again
        parts = _format_parts(fmt, bos, eos)
        if len(parts) == 1:
            return parts[0]
        return "".join([values.get(p, "{" + p + "}") if i % 2 else p for i, p in enumerate(parts)])

    return fill


def _jinja_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _jinja_concat(fmt: str, exprs: Mapping[str, str]) -> str:
    """A Jinja expression concatenating the literal parts of `fmt` with expressions for its placeholders."""
    exprs = {"bos": "bos_token", "eos": "eos_token", **exprs}
    terms, pos = [], 0
    for match in PLACEHOLDER.finditer(fmt):
        if match.start() > pos:
            terms.append(_jinja_string(fmt[pos:match.start()]))
        terms.append(f"({exprs[match.group(1)]})")
        pos = match.end()
    if pos < len(fmt):
        terms.append(_jinja_string(fmt[pos:]))
    return " + ".join(terms) or "''"


# -- the `tokenizer` template: the model's own chat_template, spans found by rendering prefixes ----------------
def tool_definitions(tools: Any) -> list[dict[str, Any]]:
    """A record's tool definitions (JSON text of function definitions, or a list) as HF/OpenAI tools."""
    listed = json.loads(tools) if isinstance(tools, str) and tools else list(tools or [])
    return [t if t.get("type") == "function" and "function" in t else {"type": "function", "function": t}
            for t in listed]


def hf_messages(system: str | None, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Canonical turns as HF chat messages (an Alpaca input folded back into the user turn; tool calls as
    `{type, function: {name, arguments}}` with the arguments parsed). A system prompt goes first as a system
    message; None leaves it out, so the template's own default applies."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    for m in messages:
        content = alpaca_user_content(m["content"], m.get("input")) if m.get("role") == "user" else m["content"]
        message: dict[str, Any] = {"role": m["role"], "content": content}
        if m.get("tool_calls"):
            message["tool_calls"] = [{**({"id": c["id"]} if c.get("id") else {}), "type": "function",
                                      "function": {"name": c["name"], "arguments": json.loads(c["arguments"])}}
                                     for c in m["tool_calls"]]
        if m.get("tool_call_id"):
            message["tool_call_id"] = m["tool_call_id"]
        out.append(message)
    return out


def render_jinja(source: str, messages: list[dict[str, Any]], add_generation_prompt: bool, bos: str, eos: str,
                 tools: list[dict[str, Any]] | None = None) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], tools=tools or None, chat_template=source,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
    return rendered[0]


def _jinja_pieces(source: str, system: str | None, messages: Sequence[Mapping[str, Any]],
                  add_generation_prompt: bool, bos: str, eos: str, tools: list[dict[str, Any]]) -> list[Piece]:
    """Pieces of a chat_template rendering: each assistant turn is located by rendering the conversation up
    to it with the generation prompt (a prefix of the full text in any well-formed template); its closing
    markup up to the next turn, less trailing whitespace, is the supervised end of turn (with the turn's tool
    calls, which must appear there: a template that drops calls or ignores the tools is refused)."""
    import jinja2

    conv = hf_messages(system, messages)
    has_tools = bool(tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in conv)

    def render(turns: list[dict[str, Any]], generation: bool) -> str:
        try:
            return render_jinja(source, turns, generation, bos, eos, tools)
        except jinja2.TemplateError as exc:
            error = NoToolFormat if has_tools else BadInputError
            raise error(f"the tokenizer's chat_template cannot render this conversation: {exc}",
                        field="template") from None

    full = render(conv, add_generation_prompt)
    if tools and render_jinja(source, conv, add_generation_prompt, bos, eos) == full:
        raise NoToolFormat("the tokenizer's chat_template ignores tool definitions: pick chatml or llama3",
                           field="template")
    offset = len(conv) - len(messages)
    pieces, pos = [], 0
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(conv[:offset + turn], True)
        through = render(conv[:offset + turn + 1], False)
        start = full.find(message["content"], len(prompt)) if full.startswith(prompt) else -1
        if start < 0 or not full.startswith(through):
            raise BadInputError("the tokenizer's chat_template does not render this conversation turn by turn "
                                "(assistant turn not found after its generation prompt); pick a named template",
                                row=turn, field="messages")
        end = start + len(message["content"])
        closing = through[end:]
        closing_end = end + len(closing.rstrip())
        missing = [c["name"] for c in message.get("tool_calls") or [] if c["name"] not in full[end:closing_end]]
        if missing:
            raise NoToolFormat(f"the tokenizer's chat_template drops the tool calls {missing}: pick chatml or llama3",
                               row=turn, field="template")
        pieces += [Piece(full[pos:start], MARKUP, turn), Piece(full[start:end], ASSISTANT, turn),
                   Piece(full[end:closing_end], END, turn)]
        pos = closing_end
    pieces.append(Piece(full[pos:], MARKUP))
    return [p for p in pieces if p.text]


# -- the registry --------------------------------------------------------------------------------------------
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
QWEN_TOOLS = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
              "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>"
              "\n\nFor each function call, return a json object with function name and arguments within "
              "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
              "<args-json-object>}\n</tool_call>")
LLAMA31_TOOLS = ("Given the following functions, please respond with a JSON for a function call with its proper "
                 "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, "
                 "\"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{tools}\n\n")
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.")

BUILTIN: tuple[Template, ...] = (
    Template(
        name="alpaca", description="Stanford Alpaca's PROMPT_DICT (prompt_input / prompt_no_input); response + EOS",
        source="github.com/tatsu-lab/stanford_alpaca train.py",
        system_format="{system}\n\n", default_system=ALPACA_NO_INPUT, input_default_system=ALPACA_INPUT,
        user_format="### Instruction:\n{content}\n\n",
        input_user_format="### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n",
        turn_separator="\n\n", assistant_prefix="### Response:", stop=("### Instruction:",),
    ),
    Template(
        name="llama2", description="Llama 2 chat: <s>[INST] <<SYS>> … <</SYS>> … [/INST] answer </s>",
        source="Meta llama generation.py / HF llama-2-chat template",
        system_format="<<SYS>>\n{system}\n<</SYS>>\n\n", system_position="first_user", default_system=LLAMA2_SYSTEM,
        user_format="{bos}[INST] {content} [/INST]", assistant_lead=" ", assistant_end=" {eos}",
    ),
    Template(
        name="linly", description="Linly-AI Chinese-LLaMA: ### Instruction:{prompt}  ### Response:",
        source="github.com/CVI-SZU/Linly", system_format="{system}\n",
        user_format="### Instruction:{content}  ", assistant_prefix="### Response:", turn_separator="\n",
        stop=("### Instruction:",),
    ),
    Template(
        name="openllm", description="NousResearch (OpenLLM leaderboard): ### Instruction / ### Input / ### Response",
        source="huggingface.co/NousResearch/Nous-Hermes-13b", system_format="{system}\n\n",
        user_format="### Instruction:\n{content}\n\n",
        input_user_format="### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n",
        assistant_prefix="### Response:\n", turn_separator="\n\n", stop=("### Instruction:",),
    ),
    Template(
        name="yayi", description="YaYi (wenge-research): <|System|>: / <|Human|>: / <|YaYi|>:",
        source="huggingface.co/wenge-research/yayi-7b-llama2",
        system_format="<|System|>:\n{system}\n\n",
        default_system=LLAMA2_SYSTEM.replace("honest assistant.", "honest assistant named YaYi developed by "
                                             "Beijing Wenge Technology Co.,Ltd."),
        user_format="<|Human|>:\n{content}\n\n", assistant_prefix="<|YaYi|>:\n", turn_separator="\n\n",
        stop=("<|Human|>:",),
    ),
    Template(
        name="stablebeluga2", description="Stable Beluga 2: ### System: / ### User: / ### Assistant:",
        source="huggingface.co/stabilityai/StableBeluga2",
        system_format="### System:\n{system}\n\n",
        default_system="You are Stable Beluga, an AI that follows instructions extremely well. Help as much as you "
                       "can. Remember, be safe, and don't do anything illegal.",
        user_format="### User: {content}\n\n", assistant_prefix="### Assistant:\n", turn_separator="\n\n",
        stop=("### User:",),
    ),
    Template(
        name="guanaco", description="Guanaco / OpenAssistant: a curious human … ### Human: … ### Assistant:",
        source="huggingface.co/timdettmers/guanaco-33b-merged", system_format="{system}\n",
        default_system="A chat between a curious human and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        user_format="### Human: {content} ", assistant_prefix="### Assistant: ", turn_separator="\n",
        stop=("### Human:",),
    ),
    Template(
        name="chatml", description="ChatML (<|im_start|>role … <|im_end|>), as in SmolLM2, Qwen, OpenHermes; tool "
                                   "calling as Qwen3 writes it (<tools>, <tool_call>, <tool_response>)",
        source="github.com/openai/openai-python chatml.md; Qwen3 chat_template",
        system_format="<|im_start|>system\n{system}<|im_end|>\n", user_format="<|im_start|>user\n{content}<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n", assistant_end="<|im_end|>", assistant_suffix="\n",
        stop=("<|im_end|>",), tools_format=QWEN_TOOLS,
        tool_call_format='<tool_call>\n{"name": "{name}", "arguments": {arguments}}\n</tool_call>',
        tool_results_prefix="<|im_start|>user", tool_result_format="\n<tool_response>\n{content}\n</tool_response>",
        tool_results_suffix="<|im_end|>\n",
    ),
    Template(
        name="vicuna", description="Vicuna v1.1 (FastChat): SYSTEM USER: … ASSISTANT: …</s>",
        source="github.com/lm-sys/FastChat conversation.py vicuna_v1.1", system_format="{system} ",
        default_system="A chat between a curious user and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        user_format="USER: {content} ", assistant_prefix="ASSISTANT:", assistant_lead=" ",
        stop=("USER:",),
    ),
    Template(
        name="llama3", description="Llama 3 instruct: <|start_header_id|>role<|end_header_id|> … <|eot_id|>; tool "
                                   "calling as Llama 3.1's JSON format (tools in the first user turn, results as "
                                   "ipython turns), without 3.1's date header",
        source="huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct; Llama 3.1 chat_template", prefix="{bos}",
        system_format="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        user_format="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n", assistant_end="<|eot_id|>",
        stop=("<|eot_id|>",), default_bos="<|begin_of_text|>", default_eos="<|end_of_text|>",
        tools_format=LLAMA31_TOOLS, tools_position="first_user", tool_json_indent=4, tools_separator="\n\n",
        tool_call_format='{"name": "{name}", "parameters": {arguments}}',
        tool_result_format="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>",
    ),
    Template(
        name="tokenizer", description="the base model tokenizer's own chat_template (bound when the tokenizer loads)",
        source="tokenizer_config.json chat_template", from_tokenizer=True,
    ),
)
REGISTRY: dict[str, Template] = {t.name: t for t in BUILTIN}


def list_templates() -> list[str]:
    return list(REGISTRY)


def get_template(name: str) -> Template:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BadInputError(f"unknown template {name!r}; available: {', '.join(REGISTRY)}", field="template") from None


def for_tokenizer(template: Template, tokenizer: Any) -> Template:
    """Bind the `tokenizer` template to a tokenizer's chat_template; other templates are returned unchanged."""
    if not template.from_tokenizer or template.jinja is not None:
        return template
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source:
        raise BadInputError("template 'tokenizer' needs a tokenizer with a chat_template; this one has none "
                            "(pick a named template)", field="template")
    return template.model_copy(update={"jinja": source})


def template_messages(messages: Sequence[Mapping[str, str]], meta: str | Mapping[str, Any] | None
                      ) -> list[dict[str, str]]:
    """Canonical turns for a template: an Alpaca record's first user turn is split back into instruction and
    input (kept in meta by ingest, joined by `tasks.text.alpaca_user_content`), so `alpaca`/`openllm` can use
    their with-input prompt; every other template folds it back into the same user text."""
    out = [dict(m) for m in messages]
    meta = json.loads(meta) if isinstance(meta, str) and meta else dict(meta or {})
    instruction, input_text = meta.get("instruction"), meta.get("input")
    if (out and out[0].get("role") == "user" and isinstance(instruction, str) and isinstance(input_text, str)
            and input_text.strip()
            and alpaca_user_content(instruction.strip(), input_text.strip()) == out[0]["content"]):
        out[0] = {"role": "user", "content": instruction.strip(), "input": input_text.strip()}
    return out
