"""A local transformers causal LM as the generator (e.g. SmolLM2 materialized into a folder), batched."""
from __future__ import annotations

import logging
from pathlib import Path

from tasks.errors import BadInputError
from tasks.self_instruct.backends import Completion

log = logging.getLogger("sftflow.self_instruct")


class LocalTransformersBackend:
    name = "local"

    def __init__(self, model: str, *, temperature: float = 1.0, top_p: float = 1.0, max_tokens: int = 3072,
                 stop: list[str] | None = None, seed: int = 42, device: str = "auto", precision: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tasks.calibrate import measured
        from tasks.device import Precision, pick_device, resolve_precision

        if not Path(model).is_dir():
            raise BadInputError(f"the local backend needs a Hugging Face model folder; {model!r} is not one (the "
                                "bundled SmolLM2, once a pipeline ran: STORE/base_model-…/files/model, see "
                                "`sftflow store ls`)", field="model")
        self.model = model
        self.precision = precision if isinstance(precision, Precision) else \
            resolve_precision(precision, pick_device(device, "device"), field="precision",
                              measure=measured("lm-inference"))
        self.device = self.precision.device
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"  # generation continues every row from its last prompt token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(self.device).eval()
        self.context = getattr(self.lm.config, "max_position_embeddings", None)
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.stop = list(stop or [])
        self.seed, self.calls, self.retries = seed, 0, 0

    def _chat(self, prompt: str) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def complete(self, prompts: list[str]) -> list[Completion]:
        import torch

        batch = self.tokenizer([self._chat(p) for p in prompts], return_tensors="pt", padding=True,
                               add_special_tokens=False, return_token_type_ids=False).to(self.device)
        prompt_len = batch["input_ids"].shape[1]
        new_tokens = self.max_tokens if self.context is None else min(self.max_tokens, self.context - prompt_len)
        if new_tokens <= 0:
            raise BadInputError(f"the prompt is {prompt_len} tokens, the model's context {self.context}: use fewer "
                                "num_prompt_instructions or a model with a longer context", field="model")
        torch.manual_seed(self.seed + self.calls)  # reproducible, and different for every batch
        self.calls += 1
        sample = self.temperature > 0
        with torch.no_grad(), self.precision.autocast():
            out = self.lm.generate(**batch, max_new_tokens=new_tokens, do_sample=sample,
                                   temperature=self.temperature if sample else None,
                                   top_p=self.top_p if sample else None, pad_token_id=self.tokenizer.pad_token_id)
        completions = []
        for row, prompt_tokens in zip(out[:, prompt_len:], batch["attention_mask"].sum(dim=1).tolist()):
            ids = row.tolist()
            eos = self.tokenizer.eos_token_id
            ended = eos in ids
            ids = ids[:ids.index(eos)] if ended else ids
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            cut = [text.index(s) for s in self.stop if s in text]
            finish = "stop" if ended or cut else "length"
            completions.append(Completion(text[:min(cut)] if cut else text, finish, int(prompt_tokens), len(ids)))
        return completions
