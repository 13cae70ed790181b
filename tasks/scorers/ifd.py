"""`ifd`: Instruction-Following Difficulty as in Superfiltering (arXiv:2402.00530), with a small causal LM.

IFD = loss(answer | instruction) / loss(answer alone): the mean cross-entropy of the answer's tokens after the
conversation, over the same tokens after nothing. Near 1, the instruction hardly helps the model predict the
answer; Superfiltering keeps high-IFD rows and drops those at or above 1 (the answer does not follow from the
instruction). The condition is everything before the last assistant turn (system prompt and earlier turns
included) in the model's chat template with its generation prompt; "alone" is that template with no turns, so
both passes score exactly the same answer tokens. Without a chat template: "Role: content" paragraphs, then
"Assistant: ". Tool calls are left out of the turns (their content is kept).

The model is the base_model stage's (SmolLM2-135M by default) or any local Hugging Face folder (`model`).
Both passes of a chunk go through tasks/evaluate/loss.py's length-sorted, batched per-row loss, on the GPU
when there is one. The per-token losses are kept (`ifd_conditioned_loss`, `ifd_answer_loss`), so another rule
is a re-score of two columns, not another forward pass.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from storage.params import NOT_IN_KEY
from tasks.device import RESOLVED_IN_KEY, PrecisionSetting
from tasks.errors import BadInputError
from tasks.scorers.base import Scorer, ScorerConfig, ScorerInputs, Scores, Scoring
from tasks.tokenize import IGNORE_INDEX

NO_ANSWER_SCORE = -1.0  # below every other score: rows whose answer has no token cannot be measured


class IfdConfig(ScorerConfig):
    scorer: Literal["ifd"] = "ifd"
    model: str | None = Field(None, description="local Hugging Face causal LM folder; the base_model stage's model "
                                                "(SmolLM2-135M) when empty. The key holds the path, not the weights")
    drop_above: float | None = Field(1.0, gt=0, description="rows with IFD at or above this score below every "
                                                            "other row (Superfiltering: 1); none: rank by IFD alone")
    max_length: int = Field(1024, ge=8, description="tokens of condition + answer; longer rows lose the start of "
                                                    "the condition first, then the end of the answer")
    batch_size: int = Field(8, ge=1, json_schema_extra=NOT_IN_KEY, description="rows per forward pass")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="auto: bf16 autocast where the GPU or the CPU has bf16 units, else fp32 (the losses are "
                    "taken in fp32 from upcast logits either way)")


def needs(params: IfdConfig) -> frozenset[str]:
    return frozenset() if params.model else frozenset({"base_model"})


def prompt_text(tokenizer: Any, turns: list[dict[str, str]]) -> str:
    """The text before an assistant answer to `turns` (none: the answer alone)."""
    if getattr(tokenizer, "chat_template", None):
        # as a batch of one: transformers refuses a bare empty conversation
        return tokenizer.apply_chat_template([turns], tokenize=False, add_generation_prompt=True)[0]
    return "".join(f"{t['role'].capitalize()}: {t['content']}\n\n" for t in turns) + "Assistant: "


def split_last_answer(system: str | None, messages: list[dict[str, Any]]) -> tuple[list[dict[str, str]], str]:
    """(the turns before the last assistant turn, system prompt first; the last assistant turn's text)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    turns = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": m["role"], "content": m["content"] or ""} for m in messages[:last]]
    return turns, messages[last]["content"] or ""


def ifd_scores(conditioned: np.ndarray, alone: np.ndarray, drop_above: float | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IFD, score, dropped) from the two mean losses. Kept rows score their IFD (>= 0); rows at or above `drop_above`
    score -IFD/(1+IFD), in (-1, 0): below every kept row, the furthest above the threshold last; rows without
    losses (no answer token) score -1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ifd = conditioned / alone
    measured = np.isfinite(ifd)
    dropped = measured & (ifd >= drop_above) if drop_above is not None else np.zeros(len(ifd), bool)
    score = np.full(len(ifd), NO_ANSWER_SCORE)
    score[measured] = ifd[measured]
    score[dropped] = -ifd[dropped] / (1 + ifd[dropped])
    return ifd, score, dropped


def open_ifd(inputs: ScorerInputs) -> Scoring:
    from transformers import AutoTokenizer

    from tasks.evaluate.loss import load_for_eval, model_limits

    p: IfdConfig = inputs.params
    if p.model:
        folder, name = p.model, p.model
    elif inputs.base_model is not None:
        folder, name = inputs.store.local_path(inputs.base_model.key, "files", "model"), inputs.base_model.key
    else:
        raise BadInputError("the ifd scorer needs a causal LM: set iqs.model to a local model folder, or run it "
                            "after the base_model stage", field="iqs.model")
    _, positions = model_limits(folder)
    max_length = min(p.max_length, positions or p.max_length)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    precision = inputs.precision
    model = load_for_eval(folder, None, precision)
    alone_prefix = tokenizer(prompt_text(tokenizer, []), add_special_tokens=False)["input_ids"]
    if not alone_prefix or len(alone_prefix) >= max_length:
        raise BadInputError(f"the chat template of {name} gives {len(alone_prefix)} tokens before an answer alone: "
                            f"IFD needs at least one and fewer than max_length ({max_length})", field="iqs.model")

    def score(rows: pa.Table) -> Scores:
        from tasks.evaluate.loss import TokenRows, row_losses

        parts = [split_last_answer(r["system"], r["messages"]) for r in rows.select(["system", "messages"]).to_pylist()]
        prefixes = tokenizer([prompt_text(tokenizer, turns) for turns, _ in parts], add_special_tokens=False)
        answers = tokenizer([answer for _, answer in parts], add_special_tokens=False)
        sequences, truncated = [], 0
        for prefix, answer in zip(prefixes["input_ids"], answers["input_ids"]):
            kept = answer[:max_length - len(alone_prefix)]
            condition = prefix[-(max_length - len(kept)):] if len(prefix) + len(kept) > max_length else prefix
            truncated += len(kept) < len(answer) or len(condition) < len(prefix)
            sequences += [(condition, kept), (alone_prefix, kept)]  # conditioned, then alone
        measured = [i for i, (_, answer) in enumerate(sequences) if answer]
        token_rows = TokenRows(
            [str(i) for i in measured],
            [np.array(sequences[i][0] + sequences[i][1], np.int64) for i in measured],
            [np.array([IGNORE_INDEX] * len(sequences[i][0]) + sequences[i][1], np.int64) for i in measured],
            np.array([len(sequences[i][1]) for i in measured], np.int64))
        losses = np.full(len(sequences), np.nan)
        if measured:
            losses[measured] = row_losses(model, token_rows, batch_size=p.batch_size, precision=precision).loss_mean
        conditioned, alone = losses[0::2], losses[1::2]
        ifd, values, dropped = ifd_scores(conditioned, alone, p.drop_above)
        return Scores(values, columns={"ifd": pa.array(ifd), "ifd_conditioned_loss": pa.array(conditioned),
                                       "ifd_answer_loss": pa.array(alone)},
                      truncated=truncated, counts={"ifd_dropped": int(dropped.sum()),
                                                   "ifd_no_answer": int((~np.isfinite(ifd)).sum())})

    return Scoring(score, model=name)


SCORER = Scorer("ifd", IfdConfig, open_ifd, needs=needs, part_rows=512, precision=lambda p: p.precision,
                description="Superfiltering's instruction-following difficulty with a small causal LM")
