"""`sftflow templates list | show NAME | render NAME --input FILE.json`: the prompt templates and the exact
text a model sees for a conversation."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli.output import emit, format_table

EXAMPLE = {"system": None, "messages": [
    {"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Rome."}]}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("templates", help="list, show and render prompt templates")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("list", help="the built-in templates")
    ls.add_argument("--json", action="store_true")
    show = verbs.add_parser("show", help="a template's fields, its Jinja chat_template and an example")
    show.add_argument("name")
    render = verbs.add_parser("render", help="print the exact text a model sees for a conversation")
    render.add_argument("name")
    render.add_argument("--input", required=True, type=Path, metavar="FILE.json",
                        help="a conversation in canonical form: {system, messages: [{role, content}], meta}")
    render.add_argument("--generation-prompt", action="store_true", help="end with the assistant's generation prompt")
    render.add_argument("--system", help="system prompt replacing the conversation's ('' for none)")
    render.add_argument("--train-on", choices=["all_assistant", "last_assistant", "prompt"], default="all_assistant",
                        help="which parts --json lists as supervised (carrying loss)")
    for p in (show, render):
        p.add_argument("--tokenizer", metavar="PATH", help="HF tokenizer folder or .gguf file: its BOS/EOS tokens "
                                                           "(and its chat_template for the `tokenizer` template)")
        p.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    target = Path(path)
    if target.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(target.parent), gguf_file=target.name)
    return AutoTokenizer.from_pretrained(str(target))


def read_conversation(path: Path) -> dict[str, Any]:
    from tasks.errors import BadInputError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"not JSON: {exc}", file=str(path)) from exc
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise BadInputError("expected {\"messages\": [{\"role\", \"content\"}, ...]} (canonical form)",
                            file=str(path), field="messages")
    for row, message in enumerate(data["messages"]):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise BadInputError("each message needs a role and a string content", file=str(path), row=row,
                                field="messages")
        if message.get("role") == "system":
            raise BadInputError("put the system prompt in the top-level 'system' field", file=str(path), row=row,
                                field="role")
    return data


def handle(args: argparse.Namespace) -> int:
    from tasks.templates import for_tokenizer, get_template, list_templates
    from tasks.tokenize import ConversationEncoder

    if args.verb == "list":
        rows = [{"name": t.name, "description": t.description,
                 "stop": ", ".join(t.stop) or "-"} for t in map(get_template, list_templates())]
        emit({"templates": [get_template(name).summary() for name in list_templates()]}, args.json,
             format_table(rows, ["name", "description", "stop"]))
        return 0
    template = get_template(args.name)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    if tokenizer is not None:
        template = for_tokenizer(template, tokenizer)
    elif template.from_tokenizer:
        from tasks.errors import BadInputError

        raise BadInputError("template 'tokenizer' needs --tokenizer PATH (a folder or a .gguf file)",
                            field="tokenizer")
    tokens = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""} if tokenizer else {}
    if args.verb == "show":
        example = template.render(EXAMPLE["system"], EXAMPLE["messages"], **tokens)
        result = {"template": template.summary(), "chat_template": template.chat_template(), "example": example}
        fields = "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in template.summary().items()
                           if k != "jinja")
        emit(result, args.json, f"{fields}\n\nchat_template:\n{template.chat_template()}\n\nexample:\n{example}")
        return 0
    from tasks.templates import template_messages
    from tasks.tokenize import supervised_spans

    conversation = read_conversation(args.input)
    system = args.system if args.system is not None else conversation.get("system")
    turns = template_messages(conversation["messages"], conversation.get("meta"))
    pieces = template.render_pieces(system, turns, args.generation_prompt, **tokens)
    text = "".join(p.text for p in pieces)
    result: dict[str, Any] = {"template": template.name, "text": text,
                              "supervised": [text[a:b] for a, b in supervised_spans(pieces, args.train_on)]}
    if tokenizer is not None:
        encoder = ConversationEncoder(tokenizer, template, max_length=10**9)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        result["tokens"] = len(ids) + int(encoder.add_bos and not text.startswith(encoder.bos_token))
    emit(result, args.json, text)
    return 0
