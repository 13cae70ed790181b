"""Answering prompts with a stored model, in the chat format it was trained on.

A train artifact holds the adapter and the tokenizer whose `chat_template` is the training template; its
base model is the `base_model` artifact named in its manifest. The same template is used with and without
the adapter, so the two answers differ only by what training changed.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.store import DatasetMissing, Store
from tasks.calibrate import measured
from tasks.device import Precision
from tasks.errors import BadInputError


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    adapter: bool
    description: str
    system: str | None = None  # the system prompt training used (format.system), the default for prompts


def resolve_key(store: Store, reference: str) -> str:
    """A full store key, or a prefix of exactly one model key."""
    matches = store.resolve(reference, ("train", "base_model"))
    if len(matches) == 1:
        return matches[0]
    hint = f"it matches {len(matches)} keys" if matches else "no such key; see `sftflow store ls`"
    raise BadInputError(f"{reference!r} does not name one model in the store {store.url}: {hint}", field="--model")


def load_model(store: Store, reference: str, adapter: bool = True) -> Loaded:
    """A `train` artifact (with or without its adapter), a `base_model` artifact, or a local model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(reference).is_dir():
        return Loaded(AutoModelForCausalLM.from_pretrained(reference), AutoTokenizer.from_pretrained(reference),
                      False, reference)
    key = resolve_key(store, reference)
    try:
        manifest = store.manifest(key)
    except DatasetMissing as exc:
        raise BadInputError(str(exc), field="--model") from exc
    if manifest["stage"] == "base_model":
        folder = store.local_path(key, "files", "model")
        return Loaded(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), False, key)
    if manifest["stage"] != "train":
        raise BadInputError(f"{key} is a {manifest['stage']} output, not a model", field="--model")
    from tasks.artifacts import Adapter

    trained = Adapter.read(store, key)
    tokenizer = AutoTokenizer.from_pretrained(store.local_path(key, "files", "tokenizer"))
    model = AutoModelForCausalLM.from_pretrained(store.local_path(trained.base_model, "files", "model"))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, store.local_path(key, "files", "adapter"))
    return Loaded(model, tokenizer, adapter, f"{key} ({'with' if adapter else 'without'} adapter)",
                  trained.tokenized.system)


def render_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise BadInputError("this tokenizer has no chat_template to render prompts with", field="--model")
    # "" is "no system prompt" (as format.system=""), None leaves the template's default
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, text: str) -> Any:
    """Token ids exactly as the format stage made them: BOS prepended only where the tokenizer adds one."""
    from tasks.tokenize import tokenizer_adds_bos

    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False, return_token_type_ids=False)
    bos = tokenizer.bos_token
    if bos and tokenizer_adds_bos(tokenizer) and not text.startswith(bos):
        batch = tokenizer(bos + text, return_tensors="pt", add_special_tokens=False, return_token_type_ids=False)
    return batch


def answer(model: Any, tokenizer: Any, prompts: list[str], *, system: str | None = None, max_new_tokens: int = 64,
           temperature: float = 0.0, precision: Precision | None = None) -> list[dict[str, Any]]:
    """Greedy (temperature 0) or sampled answers, one prompt at a time (no padding effects), under the
    precision's autocast (the model device's `auto` rule when none is given)."""
    import torch

    from tasks.device import resolve_precision

    model.eval()
    device = next(model.parameters()).device
    precision = precision or resolve_precision("auto", device.type, field="precision", measure=measured("lm-inference"))
    results = []
    for prompt in prompts:
        batch = encode_prompt(tokenizer, render_prompt(tokenizer, prompt, system)).to(device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        began = time.perf_counter()
        with torch.no_grad(), precision.autocast():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **sampling)
        new = out[0, batch["input_ids"].shape[1]:]
        results.append({"prompt": prompt, "answer": tokenizer.decode(new, skip_special_tokens=True).strip(),
                        "new_tokens": int(new.numel()), "seconds": round(time.perf_counter() - began, 3)})
    return results


@dataclass
class Answer:
    text: str
    finish_reason: str  # "stop": the model ended it; "length": max_new_tokens cut it
    new_tokens: int  # tokens generated, the end-of-turn token not counted


def generate_answers(model: Any, tokenizer: Any, prompts: list[str], *, system: str | None = None,
                     max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                     batch_size: int = 16, precision: Precision | None = None,
                     advance: Any = None) -> list[Answer]:
    """Every prompt answered in batches of similar prompt length (left-padded, the KV cache reused token after
    token), greedy at temperature 0, else sampled with `top_p` from a seed set before each batch (a batch's
    samples depend on the seed and its prompts). A greedy row leaves its batch when it ends its turn
    (`greedy_decode`); a sampled batch runs until every row has ended its turn."""
    import numpy as np
    import torch

    model.eval()
    device = next(model.parameters()).device
    precision = precision or Precision("fp32", device.type, "asked for")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ends = {tokenizer.eos_token_id, *([tokenizer.convert_tokens_to_ids("<|im_end|>")]
                                      if "<|im_end|>" in tokenizer.get_vocab() else [])} - {None}
    encoded = [encode_prompt(tokenizer, render_prompt(tokenizer, p, system))["input_ids"][0] for p in prompts]
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")  # longest first: memory fails at once
    answers: list[Answer | None] = [None] * len(prompts)
    for number, start in enumerate(range(0, len(prompts), batch_size)):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every row's last prompt token at the same position
            input_ids[row, width - len(encoded[i]):] = encoded[i]
            attention[row, width - len(encoded[i]):] = 1
        with torch.inference_mode(), precision.autocast():
            if temperature > 0:  # a sampled batch's draws depend on all its rows: it keeps them, and HF's sampler
                torch.manual_seed(seed * 100_003 + number)
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     max_new_tokens=max_new_tokens, eos_token_id=sorted(ends), pad_token_id=pad,
                                     use_cache=True, do_sample=True, temperature=temperature, top_p=top_p)
                generated = [out[row, width:].tolist() for row in range(len(batch))]
            else:
                generated = greedy_decode(model, input_ids.to(device), attention.to(device), max_new_tokens, ends)
        for row, i in enumerate(batch):
            new = generated[row]
            stop = next((k for k, token in enumerate(new) if token in ends), None)
            kept = new if stop is None else new[:stop]
            answers[i] = Answer(tokenizer.decode(kept, skip_special_tokens=True).strip(),
                                "length" if stop is None else "stop", len(kept))
        if advance:
            advance(len(batch))
    return answers  # type: ignore[return-value]


def greedy_decode(model: Any, input_ids: Any, attention: Any, max_new_tokens: int, ends: set[int]) -> list[list[int]]:
    """Greedy answers to a left-padded batch, the KV cache reused token after token; a row leaves the batch (and
    its cache) as soon as it ends its turn, so the rows still writing no longer pay for the finished ones. Each
    row's tokens are `model.generate`'s greedy tokens (a row's logits do not depend on the other rows)."""
    import torch
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    live = torch.arange(rows)  # the original row of each row still in the batch
    stops = torch.tensor(sorted(ends), device=input_ids.device)
    # left padding: a row's positions count its own tokens only, as `model.generate` numbers them
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)  # the config: sliding-window layers get their own cache
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel passes kwargs on
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(inner.forward).parameters else {}
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                   use_cache=True, **last_only).logits[:, -1]
    following = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        tokens = logits.float().argmax(-1)
        for row, token in zip(live.tolist(), tokens.tolist()):
            generated[row].append(token)
        writing = ~torch.isin(tokens, stops)
        if step == max_new_tokens - 1 or not writing.any():
            break
        if not writing.all():
            kept = writing.nonzero().squeeze(1)
            cache.batch_select_indices(kept)
            live, tokens, attention, following = live[kept.cpu()], tokens[kept], attention[kept], following[kept]
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
        logits = model(input_ids=tokens[:, None], attention_mask=attention, position_ids=following,
                       past_key_values=cache, use_cache=True).logits[:, -1]
        following = following + 1
    return generated


def compare_markdown(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    lines = ["## Sample answers (same template; base model vs. trained adapter)", ""]
    for b, a in zip(before, after):
        lines += [f"**Prompt:** {b['prompt']}", "", f"- before: {_quote(b['answer'])}",
                  f"- after: {_quote(a['answer'])}", ""]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return " ".join(text.split())[:500] or "(empty)"
