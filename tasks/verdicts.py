"""Public judge verdicts as pairwise ground truth, and a judge's report card against them.

The layout is AlpacaEval's annotations: one record per (prompt, model) answer with `id` (the prompt), `generator`,
`output` (the answer) and `p_better_than_reference` (the annotator's probability that the answer beats the
reference answer: GPT-4-turbo's for AlpacaEval 2.0, text-davinci-003's judged by GPT-4 for 1.0). Two answers
to one prompt whose verdicts differ by at least `MIN_GAP` make a decisive pair: the annotator preferred the
one with the higher verdict. The instruction comes from an `instruction` field, or from a prompts file by id.

Prompts are split by a hash of their id: a judge trains on some prompts and is validated on the others, never on
a pair of a prompt it saw. The report card of a judge on held-out pairs: how often it agrees with the annotator,
beside "the longer answer wins" (the annotators' own taste: about 80% of their decisive pairs) and "the first
answer wins" (pairs in file order).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInputError

MIN_GAP = 0.1


@dataclass(frozen=True)
class Answer:
    prompt_id: str
    instruction: str
    generator: str
    text: str
    verdict: float  # the annotator's p_better_than_reference


@dataclass(frozen=True)
class Pair:
    first: Answer
    second: Answer
    annotator: str  # the verdict file's name

    @property
    def first_preferred(self) -> bool:
        return self.first.verdict > self.second.verdict


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        return [json.dumps(record) for record in json.loads(text)]
    return [line for line in text.splitlines() if line.strip()]


def instructions_by_id(prompts: str | Path | None) -> dict[str, str]:
    if prompts is None:
        return {}
    found = {}
    for n, line in enumerate(_lines(Path(prompts))):
        record = json.loads(line)
        found[str(record.get("id", f"alpacaeval-{n:03d}"))] = record["instruction"]
    return found


def read_answers(path: str | Path, prompts: str | Path | None = None) -> list[Answer]:
    """Every judged answer of a verdict file; a record without an instruction (none in it, its id not in
    `prompts`) or without a verdict is bad input naming the row."""
    path = Path(path)
    known = instructions_by_id(prompts)
    answers = []
    for row, line in enumerate(_lines(path)):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"not JSON: {exc.msg}", file=str(path), row=row) from None
        prompt_id = str(record.get("id", record.get("instruction", "")))
        instruction = record.get("instruction") or known.get(prompt_id)
        if not instruction:
            raise BadInputError(f"no instruction for prompt {prompt_id!r}: give the prompts file (AlpacaEval's "
                                "prompts by id) or an instruction field", file=str(path), row=row, field="id")
        try:
            verdict = float(record["p_better_than_reference"])
        except (KeyError, TypeError, ValueError):
            raise BadInputError("no numeric p_better_than_reference", file=str(path), row=row,
                                field="p_better_than_reference") from None
        answers.append(Answer(prompt_id, instruction, str(record.get("generator", "")),
                              str(record.get("output") or ""), verdict))
    return answers


def held_out(prompt_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether a prompt is a validation prompt: a hash of its id, the same on every machine and run."""
    digest = hashlib.sha256(f"verdicts:{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < fraction


def decisive_pairs(answers: Sequence[Answer], annotator: str, min_gap: float = MIN_GAP,
                   keep: Callable[[str], bool] = lambda prompt_id: True,
                   per_prompt: int | None = None, seed: int = 0) -> list[Pair]:
    """Pairs of two answers to one prompt whose verdicts differ by `min_gap` or more, in file order; at most
    `per_prompt` of each prompt (a seeded sample), for the prompts `keep` accepts."""
    by_prompt: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        if keep(answer.prompt_id) and answer.text.strip():
            by_prompt[answer.prompt_id].append(answer)
    rng = np.random.default_rng(seed)
    pairs = []
    for group in by_prompt.values():
        found = [Pair(a, b, annotator) for i, a in enumerate(group) for b in group[i + 1:]
                 if abs(a.verdict - b.verdict) >= min_gap]
        if per_prompt is not None and len(found) > per_prompt:
            found = [found[i] for i in sorted(rng.choice(len(found), per_prompt, replace=False))]
        pairs += found
    return pairs


def report_card(pairs: Sequence[Pair], scores: dict[tuple[str, str], float] | None) -> dict[str, Any]:
    """Agreement with the annotator on `pairs` of a judge that scored each (prompt, generator) answer (None:
    only the baselines), beside "the longer answer wins" and "the first answer wins"; ties count half."""
    if not pairs:
        return {"pairs": 0, "agreement": None, "longer_wins": None, "first_wins": None}
    first = np.array([p.first_preferred for p in pairs])
    longer = np.array([_half(len(p.first.text) - len(p.second.text)) for p in pairs])
    card = {"pairs": len(pairs), "longer_wins": _agree(longer, first), "first_wins": _agree(np.ones(len(pairs)),
                                                                                            first)}
    if scores is not None:
        judged = np.array([_half(scores[(p.first.prompt_id, p.first.generator)]
                                 - scores[(p.second.prompt_id, p.second.generator)]) for p in pairs])
        card["agreement"] = _agree(judged, first)
    else:
        card["agreement"] = None
    return card


def _half(difference: float) -> float:
    """1 when the first is preferred, 0 when the second, 0.5 on a tie."""
    return 1.0 if difference > 0 else 0.0 if difference < 0 else 0.5


def _agree(picks: np.ndarray, first_preferred: np.ndarray) -> float:
    return round(float(np.where(first_preferred, picks, 1 - picks).mean()), 4)


def agreement_of(pairs: Sequence[Pair], verdicts: np.ndarray) -> float | None:
    """How often verdicts on `pairs` (1 the first answer, 0 the second, 0.5 a tie, nan undecided: left out) agree
    with the annotator's preference, ties half."""
    verdicts = np.asarray(verdicts, np.float64)
    decided = ~np.isnan(verdicts)
    if not decided.any():
        return None
    first = np.array([p.first_preferred for p in pairs])[decided]
    return _agree(verdicts[decided], first)
