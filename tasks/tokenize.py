"""Multi-turn tokenization with loss masking, batched through the fast tokenizer.

Each conversation is rendered once by its template into the exact text a model sees, with the character spans
that carry loss (assistant content plus the end-of-turn marker after it: the EOS or `<|im_end|>` a model must
learn to stop on). The whole text is tokenized in one batched call — so the ids equal what
`apply_chat_template` gives at inference, token boundaries included — and a token is supervised when any of
its characters falls in a supervised span (`Encoding.char_to_token` at the span ends, no per-token Python).
Where the turns are delimited by special tokens on a byte-level BPE tokenizer (chatml, llama3),
`SpecialTokenSpans` finds the same tokens without character offsets, so the batch skips computing them.

`train_on`: `all_assistant` (every assistant turn, the default), `last_assistant` (only the final answer),
`prompt` (every token). An assistant turn's tool calls are supervised with it, tool results never; a turn
with `loss_weight` 0 carries no loss in any mode (and `last_assistant` is the last turn that does). Labels
are -100 everywhere else. BOS is prepended once, only when the tokenizer adds
one by default and the text does not already start with it. Truncation keeps the first `max_length` tokens;
a sample left with no supervised token goes to quarantine with its reason instead of training on nothing.
"""
from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from tasks.env import temporary_env
from tasks.errors import BadInputError
from tasks.templates import (
    ASSISTANT,
    END,
    TOOL_CALL,
    NoToolFormat,
    Template,
    fill_special_tokens,
    for_tokenizer,
    template_messages,
)

IGNORE_INDEX = -100
PARALLELISM_ENV = "TOKENIZERS_PARALLELISM"
TrainOn = Literal["all_assistant", "last_assistant", "prompt"]
TOKENIZED_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("labels", pa.list_(pa.int32())),
    pa.field("length", pa.int32()),
    pa.field("num_supervised", pa.int32()),
    pa.field("text", pa.string()),
])
QUARANTINE_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("reason", pa.string()), pa.field("detail", pa.string()),
    pa.field("length", pa.int32()), pa.field("text", pa.string()),
])
NO_ASSISTANT, BAD_INPUT, TOO_LONG = "no_assistant_turn", "bad_input", "no_supervised_token_within_max_length"
NO_TOOL_FORMAT, NO_LOSS = "no_tool_format", "no_loss_turn"
SUPERVISED = (ASSISTANT, TOOL_CALL, END)


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # supervised character ranges, sorted, disjoint


def supervised_spans(pieces: Sequence[Any], train_on: TrainOn, silent: frozenset[int] = frozenset()
                     ) -> list[tuple[int, int]]:
    """Character spans that carry loss; `silent` are the turns with loss_weight 0."""
    spans, pos = [], 0
    # END, not ASSISTANT: an empty answer renders no ASSISTANT piece
    last_turn = max((p.turn for p in pieces if p.kind in SUPERVISED and p.turn not in silent), default=None)
    for piece in pieces:
        end = pos + len(piece.text)
        answer = piece.kind in SUPERVISED
        if (not (answer and piece.turn in silent)
                and (train_on == "prompt" or (answer and (train_on == "all_assistant" or piece.turn == last_turn)))):
            if spans and spans[-1][1] == pos:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((pos, end))
        pos = end
    return spans


def silent_turns(messages: Sequence[Mapping[str, Any]]) -> frozenset[int]:
    """The assistant turns whose loss_weight is 0."""
    return frozenset(i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("loss_weight") == 0)


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer.encode("a", add_special_tokens=True)
    return with_special[:1] == [bos] and tokenizer.encode("a", add_special_tokens=False)[:1] != [bos]


@dataclass
class Batch:
    """Tokenized rows plus quarantined ones, as Arrow tables."""

    table: pa.Table
    quarantine: pa.Table


@dataclass
class ConversationEncoder:
    """Renders canonical rows with a template and tokenizes them in batches (one instance per run)."""

    tokenizer: Any
    template: Template
    max_length: int = 1024
    train_on: TrainOn = "all_assistant"
    system: str | None = None  # replaces every row's system prompt when set ("" = none at all)
    parallel: bool = True  # let the Rust tokenizer spread a batch over every core
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"truncated": 0, "bos_added": 0, "masked_by_offsets": 0})
    _warned_tools: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "is_fast", False):
            raise BadInputError("the format stage needs a fast (Rust) tokenizer", field="base_model")
        self.template = for_tokenizer(self.template, self.tokenizer)
        self.bos_token = self.tokenizer.bos_token or ""
        self.eos_token = self.tokenizer.eos_token or ""
        self.add_bos = tokenizer_adds_bos(self.tokenizer)
        self._backend = self.tokenizer.backend_tokenizer
        self._special_spans = SpecialTokenSpans.for_template(self.tokenizer, self.template)
        self._check_end_marker()

    def _check_end_marker(self) -> None:
        if self.template.jinja is not None:
            return
        marker = fill_special_tokens(self.template.assistant_end, self.bos_token, self.eos_token).strip()
        if not marker:
            self.warnings.append(f"template {self.template.name!r} ends assistant turns with no marker: "
                                 "the model is never taught to stop")
            return
        ids = self.tokenizer.encode(marker, add_special_tokens=False)
        if len(ids) != 1:
            self.warnings.append(f"end-of-turn marker {marker!r} of template {self.template.name!r} is {len(ids)} "
                                 "tokens for this tokenizer, not one special token: generation must stop on the "
                                 "text (stop strings) rather than on a token id")

    def render(self, system: str | None, messages: Sequence[Mapping[str, Any]],
               meta: str | Mapping[str, Any] | None = None, tools: Any = None) -> Rendered:
        turns = template_messages(messages, meta)
        system = self.system if self.system is not None else system
        pieces = self.template.render_pieces(system, turns, bos_token=self.bos_token, eos_token=self.eos_token,
                                             tools=tools)
        text = "".join(p.text for p in pieces)
        return Rendered(text, supervised_spans(pieces, self.train_on, silent_turns(turns)))

    def encode(self, rows: pa.Table | Sequence[Mapping[str, Any]]) -> Batch:
        """Tokenize canonical rows (id, system, messages, meta, tools when there are any): the tokenized table
        and quarantined rows."""
        if isinstance(rows, pa.Table):
            rows = rows.select([c for c in ("id", "system", "messages", "meta", "tools") if c in rows.column_names])
        records = rows.to_pylist() if isinstance(rows, pa.Table) else list(rows)
        ids, rendered, bad = [], [], []
        for record in records:
            answers = [m for m in record["messages"] or [] if m.get("role") == "assistant"]
            if not answers:
                bad.append({"id": record["id"], "reason": NO_ASSISTANT, "detail": "no assistant turn to learn from"})
                continue
            if self.train_on != "prompt" and all(m.get("loss_weight") == 0 for m in answers):
                bad.append({"id": record["id"], "reason": NO_LOSS, "detail": "every assistant turn has loss_weight 0"})
                continue
            try:
                rendered.append(self.render(record.get("system"), record["messages"], record.get("meta"),
                                            record.get("tools")))
                ids.append(record["id"])
            except NoToolFormat as exc:
                bad.append({"id": record["id"], "reason": NO_TOOL_FORMAT, "detail": str(exc)})
                self._warn_no_tool_format(str(exc))
            except BadInputError as exc:
                bad.append({"id": record["id"], "reason": BAD_INPUT, "detail": str(exc)})
        table, too_long = self.encode_rendered(ids, rendered)
        quarantine = pa.Table.from_pylist(bad + too_long, schema=QUARANTINE_SCHEMA)
        return Batch(table, quarantine)

    def _warn_no_tool_format(self, detail: str) -> None:
        """Once per run: the quarantine counts them, the warning says why and what to pick instead."""
        if not self._warned_tools:
            self.warnings.append(f"conversations with tools are quarantined ({NO_TOOL_FORMAT}): {detail}")
            self._warned_tools = True

    def encode_rendered(self, ids: list[str], rendered: list[Rendered]) -> tuple[pa.Table, list[dict[str, Any]]]:
        texts = [r.text for r in rendered]
        special = self._special_spans
        with tokenizers_parallelism(self.parallel):
            encode = self._backend.encode_batch_fast if special else self._backend.encode_batch  # with offsets
            encodings = encode(texts, add_special_tokens=False)
        n = len(encodings)
        bos = [self.add_bos and not t.startswith(self.bos_token) for t in texts] if self.bos_token else [False] * n
        self.counts["bos_added"] += sum(bos)
        lengths = np.fromiter((len(e) + b for e, b in zip(encodings, bos)), np.int64, n)
        starts = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        bases = starts[:-1] + np.array(bos, np.int64)
        token_ids = np.empty(starts[-1], np.int32)
        mask = np.zeros(starts[-1], bool)
        token_ids[starts[:-1][bases > starts[:-1]]] = self.tokenizer.bos_token_id
        for i, enc in enumerate(encodings):
            token_ids[bases[i]:starts[i + 1]] = enc.ids
        unmasked = special.mark(rendered, token_ids, bases, starts[1:], mask) if special else range(n)
        if special and unmasked:  # the few samples the special-token rules do not cover
            with tokenizers_parallelism(self.parallel):
                encodings = self._backend.encode_batch([texts[i] for i in unmasked], add_special_tokens=False)
        self.counts["masked_by_offsets"] += len(unmasked)
        for i, enc in zip(unmasked, encodings):
            for first, last in _token_ranges(enc, rendered[i].spans):
                mask[bases[i] + first: bases[i] + last + 1] = True
        return self._truncate(ids, rendered, token_ids, mask, starts)

    def _truncate(self, ids: list[str], rendered: list[Rendered], token_ids: np.ndarray, mask: np.ndarray,
                  starts: np.ndarray) -> tuple[pa.Table, list[dict[str, Any]]]:
        """Keep the first max_length tokens; when a sample is cut, also drop the unsupervised tail (a prompt
        with no answer left). Samples with nothing supervised go to quarantine."""
        lengths = np.diff(starts)
        keep_len = np.minimum(lengths, self.max_length)
        for i in np.flatnonzero(lengths > self.max_length):
            supervised = np.flatnonzero(mask[starts[i]: starts[i] + keep_len[i]])
            keep_len[i] = supervised[-1] + 1 if len(supervised) else 0
        supervised_before = np.zeros(starts[-1] + 1, np.int64)
        np.cumsum(mask, out=supervised_before[1:])
        num_supervised = supervised_before[starts[:-1] + keep_len] - supervised_before[starts[:-1]]
        ok = num_supervised > 0
        keep_len[~ok] = 0
        if (keep_len < lengths).any():  # only cut or dropped samples need a per-token selection
            kept = np.arange(starts[-1]) - np.repeat(starts[:-1], lengths) < np.repeat(keep_len, lengths)
            token_ids, mask = token_ids[kept], mask[kept]
        out_lengths = keep_len[ok]
        offsets = np.zeros(len(out_lengths) + 1, np.int32)
        np.cumsum(out_lengths, out=offsets[1:])
        labels = np.where(mask, token_ids, IGNORE_INDEX).astype(np.int32)
        table = pa.Table.from_arrays([
            pa.array([i for i, good in zip(ids, ok) if good], pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(token_ids)),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(labels)),
            pa.array(out_lengths.astype(np.int32)),
            pa.array(num_supervised[ok].astype(np.int32)),
            pa.array([r.text for r, good in zip(rendered, ok) if good], pa.string()),
        ], schema=TOKENIZED_SCHEMA)
        self.counts["truncated"] += int(((lengths > self.max_length) & ok).sum())
        too_long = [{"id": ids[i], "length": int(lengths[i]), "text": rendered[i].text, "reason": TOO_LONG,
                     "detail": f"the sample is {int(lengths[i])} tokens and its first supervised token comes after "
                               f"max_length={self.max_length}"}
                    for i in np.flatnonzero(~ok)]
        return table, too_long


@dataclass
class SpecialTokenSpans:
    """Token ranges of supervised spans from the ids alone, for templates whose assistant turns open and close
    with special tokens (chatml, llama3) on a byte-level BPE tokenizer: the batch then needs no offsets.

    The tokenizer splits added tokens out before pre-tokenizing, so in the ids of a whole text the k-th
    added-token id stands for the k-th added-token string in the text (checked for every sample). A span that
    ends with the end-of-turn token ends at that token. A span that starts after the assistant header starts
    `n` tokens after the header's last special token, `n` being the token count of the rest of the header
    (`header`, e.g. "assistant\n") in context: the GPT-2 pre-tokenizer regex reads at most the whitespace run
    after the header and three more characters (a contraction) to place its split, so a probe of the header
    plus those characters gives `n`, or shows that the content's first pre-token starts inside the header.
    Any sample these rules do not cover gets its mask from character offsets instead.
    """

    backend: Any
    header: str  # the assistant header after its last special token
    added: re.Pattern  # every added token, longest first (the tokenizer's leftmost-longest match)
    added_ids: dict[str, int]
    is_added: np.ndarray  # by token id
    # lead -> header tokens in context (None: no clean split); as many as distinct answer openings
    probes: dict[str, int | None] = field(default_factory=dict)

    LEAD = re.compile(r"\s*.{0,3}", re.DOTALL)

    @classmethod
    def for_template(cls, tokenizer: Any, template: Template) -> SpecialTokenSpans | None:
        backend = tokenizer.backend_tokenizer
        plain_added = all(not (t.lstrip or t.rstrip or t.single_word or t.normalized)
                          for t in tokenizer.added_tokens_decoder.values())
        if template.jinja is not None or not plain_added or not _gpt2_byte_level_bpe(backend):
            return None
        added_ids = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}
        added = re.compile("|".join(re.escape(t) for t in sorted(added_ids, key=len, reverse=True)))
        bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
        header = fill_special_tokens(template.assistant_prefix + template.assistant_lead, bos, eos)
        end = fill_special_tokens(template.assistant_end, bos, eos)
        header_specials = list(added.finditer(header))
        if end not in added_ids or not header_specials:
            return None
        is_added = np.zeros(backend.get_vocab_size(with_added_tokens=True), bool)
        is_added[list(added_ids.values())] = True
        return cls(backend, header[header_specials[-1].end():], added, added_ids, is_added)

    def mark(self, rendered: list[Rendered], token_ids: np.ndarray, bases: np.ndarray, stops: np.ndarray,
             mask: np.ndarray) -> list[int]:
        """Set `mask` over the supervised tokens of every sample (tokens `bases[i]:stops[i]` of the batch);
        returns the samples these rules do not cover, untouched."""
        specials = np.flatnonzero(self.is_added[token_ids])
        special_ids = token_ids[specials].tolist()
        specials = specials.tolist()
        lows, highs = np.searchsorted(specials, bases).tolist(), np.searchsorted(specials, stops).tolist()
        unmasked = []
        for i, r in enumerate(rendered):
            lo, hi = lows[i], highs[i]
            ranges = self.token_ranges(r, specials[lo:hi], special_ids[lo:hi], int(bases[i]), int(stops[i]))
            if ranges is None:
                unmasked.append(i)
            for first, last in ranges or ():
                mask[first:last + 1] = True
        return unmasked

    def token_ranges(self, rendered: Rendered, positions: list[int], ids: list[int], base: int, stop: int
                     ) -> list[tuple[int, int]] | None:
        """First and last token of each supervised span, given the positions and ids of the added tokens among
        the sample's tokens `base:stop`; None where the rules do not apply."""
        text = rendered.text
        found = list(self.added.finditer(text))
        if ids != [self.added_ids[m.group()] for m in found]:
            return None
        ends = [m.end() for m in found]
        ranges = []
        for start, end in rendered.spans:
            if start == 0:
                first = base
            else:
                k = bisect.bisect_right(ends, start) - 1  # the header's last special token
                following = found[k + 1].start() if k + 1 < len(found) else len(text)
                if k < 0 or following < start or text[ends[k]:start] != self.header:
                    return None
                count = self.header_tokens(self.LEAD.match(text, start, following).group())
                if count is None:
                    return None
                first = positions[k] + 1 + count
            if end == len(text):
                last = stop - 1
            else:
                k = bisect.bisect_left(ends, end)
                if k == len(ends) or ends[k] != end:
                    return None
                last = positions[k]
            ranges.append((first, last))
        return ranges

    def header_tokens(self, lead: str) -> int | None:
        """Tokens of `header` followed by content starting with `lead`; None when they share a pre-token."""
        if lead not in self.probes:
            split = len(self.header)
            probe = self.header + lead
            words = self.backend.pre_tokenizer.pre_tokenize_str(probe)
            clean = not (split and lead) or any(start == split for _, (start, _) in words)
            offsets = self.backend.encode(probe, add_special_tokens=False).offsets
            self.probes[lead] = sum(stop <= split for _, stop in offsets) if clean else None
        return self.probes[lead]


def _gpt2_byte_level_bpe(backend: Any) -> bool:
    """No normalizer, the ByteLevel pre-tokenizer with its GPT-2 regex and no prefix space, plain BPE."""
    from tokenizers import models, pre_tokenizers

    pre, normalizer = backend.pre_tokenizer, backend.normalizer
    normalizer = json.loads(normalizer.__getstate__()) if normalizer is not None else None
    return (normalizer in (None, {"type": "Sequence", "normalizers": []})
            and isinstance(pre, pre_tokenizers.ByteLevel) and pre.use_regex
            and not pre.add_prefix_space and isinstance(backend.model, models.BPE) and backend.model.dropout is None)


@contextmanager
def tokenizers_parallelism(enabled: bool):
    """flows/settings.py turns the Rust thread pool off process-wide (fork safety for Prefect workers); one
    batched call may use it: tokenizers re-reads the variable on every call and disables itself in a fork."""
    with temporary_env(PARALLELISM_ENV, "true" if enabled else "false"):
        yield


def _token_ranges(encoding: Any, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """First and last token index overlapping each character span (characters no token covers are skipped)."""
    ranges = []
    for start, end in spans:
        first = next((t for c in range(start, end) if (t := encoding.char_to_token(c)) is not None), None)
        if first is None:
            continue
        last = next(t for c in range(end - 1, start - 1, -1) if (t := encoding.char_to_token(c)) is not None)
        ranges.append((first, last))
    return ranges


def summarize(table: pa.Table, quarantine: pa.Table) -> dict[str, Any]:
    """Counts and supervised-token shares, overall and over samples."""
    lengths = np.asarray(table.column("length").to_numpy(zero_copy_only=False), np.int64)
    supervised = np.asarray(table.column("num_supervised").to_numpy(zero_copy_only=False), np.int64)
    share = supervised / np.maximum(lengths, 1)
    reasons: dict[str, int] = {}
    for reason in quarantine.column("reason").to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1

    def q(values: np.ndarray, p: float) -> float | None:
        return round(float(np.quantile(values, p)), 4) if len(values) else None

    return {
        "rows_out": table.num_rows, "quarantined": quarantine.num_rows, "quarantine_reasons": reasons,
        "tokens": int(lengths.sum()), "supervised_tokens": int(supervised.sum()),
        "supervised_share": round(float(supervised.sum() / max(lengths.sum(), 1)), 4),
        "sample_supervised_share": {"mean": round(float(share.mean()), 4) if len(share) else None,
                                    "p10": q(share, 0.1), "p50": q(share, 0.5), "p90": q(share, 0.9),
                                    "min": q(share, 0.0)},
        "length": {"mean": round(float(lengths.mean()), 1) if len(lengths) else None, "p50": q(lengths, 0.5),
                   "p95": q(lengths, 0.95), "max": int(lengths.max()) if len(lengths) else None},
    }
