"""`reward`: a reward model trained on public judge verdicts (tasks/verdicts.py), the bundled judge of answers.

A Bradley-Terry model: each (prompt, answer) gets a score s = w . phi, and the probability that one answer beats
another is the logistic of their difference. It is fitted on the decisive pairs of the verdict files
(AlpacaEval's GPT-4-turbo and GPT-4 annotations: two answers to one prompt whose verdicts differ by 0.1 or
more), on the prompts of the training split only; the other prompts validate it, and their pairs give its
report card (agreement with each annotator beside "the longer answer wins" and "the first answer wins").

phi (`features`): `length` is the answer's length alone (log characters, words, lines: "longer wins" made
soft); `style` adds its shape (list, heading, bold and code lines, sentences, paragraphs) and its failures
(repeated words and lines, a last sentence cut off, a refusal); `content` adds the
bundled MiniLM's all-layer mean of the answer and the cosine between the prompt's and the answer's sentence
vectors (does it answer what was asked). Each set's agreement on the validation prompts is in
docs/evaluate.md; the default is the set that agreed most. As an IQS scorer (`iqs.scorer: reward`) it ranks
training rows the way the annotators rank answers.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from storage.params import NOT_IN_KEY, PATH, in_key_of
from storage.stage import StageContext, StageOutput
from tasks.errors import BadInputError
from tasks.scorers.base import Scorer, ScorerConfig, ScorerInputs, Scores, Scoring
from tasks.verdicts import MIN_GAP, Answer, decisive_pairs, held_out, read_answers, report_card

MODEL_FILE = "reward.json"
TRAINING = in_key_of("iqs.train", "judge.train")  # a training setting: the trained model's key covers it
Features = Literal["length", "style", "content"]
LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
REFUSAL = re.compile(r"\b(?:I'?m sorry|I apologi[sz]e|as an AI|I cannot|I can't|I am unable|I'm unable)\b", re.I)
LENGTH_NAMES = ("log_chars", "log_words", "log_lines")
STYLE_NAMES = ("list_lines", "heading_lines", "bold_spans", "code_lines", "log_sentences", "log_paragraphs",
               "list_share", "distinct_words", "repeated_lines", "unfinished", "refusal")


class RewardConfig(ScorerConfig):
    scorer: Literal["reward"] = "reward"
    model: str | None = Field(None, json_schema_extra=NOT_IN_KEY,
                              description="store key of a trained reward model; trained from `verdicts` if empty")
    verdicts: list[str] = Field(default_factory=list, json_schema_extra={**TRAINING, **PATH},
                                description="verdict files in AlpacaEval's layout (id, generator, output, "
                                            "p_better_than_reference), e.g. its GPT-4-turbo and GPT-4 annotations")
    prompts: str | None = Field(None, json_schema_extra={**TRAINING, **PATH},
                                description="the prompts by id (AlpacaEval's prompts file) when the verdicts "
                                            "carry no instruction")
    features: Features = Field("style", json_schema_extra=TRAINING,
                               description="length; style (+ the answer's shape); content (+ MiniLM features of "
                                           "the answer and its relevance to the prompt)")
    valid_fraction: float = Field(0.2, gt=0, lt=1, json_schema_extra=TRAINING,
                                  description="share of prompts held out (by a hash of their id) to validate")
    min_gap: float = Field(MIN_GAP, gt=0, json_schema_extra=TRAINING,
                           description="verdicts at least this far apart make a decisive pair")
    pairs_per_prompt: int | None = Field(400, ge=1, json_schema_extra=TRAINING,
                                         description="decisive pairs of a prompt trained on at most")
    c: float = Field(1.0, gt=0, json_schema_extra=TRAINING, description="inverse L2 regularization")
    seed: int = Field(0, json_schema_extra=TRAINING)

    def input_checksums(self) -> dict[str, str]:
        from tasks.digest import file_sha256

        return {path: file_sha256(path) for path in [*self.verdicts, *([self.prompts] if self.prompts else [])]}


def style_features(texts: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        words = text.lower().split()
        listed = sum(bool(LIST_LINE.match(line)) for line in lines)
        ending = text.rstrip()[-1:]
        rows.append([np.log1p(len(text)), np.log1p(len(words)), np.log1p(len(lines)),
                     np.log1p(listed), np.log1p(sum(line.startswith("#") for line in lines)),
                     np.log1p(text.count("**") // 2), np.log1p(text.count("```")),
                     np.log1p(len(SENTENCE_END.findall(text))), np.log1p(text.count("\n\n")),
                     listed / max(len(lines), 1),
                     len(set(words)) / max(len(words), 1),  # low: a small model repeating itself
                     1 - len(set(lines)) / len(lines) if lines else 0.0,
                     float(bool(ending) and ending not in ".!?:)\"'`*"),  # cut off mid-sentence
                     float(bool(REFUSAL.search(text[:300])))])
    return np.asarray(rows, np.float64).reshape(len(texts), len(LENGTH_NAMES) + len(STYLE_NAMES))


def features_of(prompts: list[str], answers: list[str], kind: str, batch_size: int = 32) -> np.ndarray:
    """phi for each (prompt, answer): length, style and content features (see the module's doc)."""
    shape = style_features(answers)
    if kind == "length":
        return shape[:, :len(LENGTH_NAMES)]
    if kind == "style":
        return shape
    from tasks.embed import encode_features
    from tasks.iqs.probe import _embedder

    model = _embedder(None)
    answer = encode_features(model, answers, batch_size)
    unique = sorted(set(prompts))
    asked = encode_features(model, unique, batch_size).embedding
    where = {text: i for i, text in enumerate(unique)}
    relevance = np.einsum("ij,ij->i", answer.embedding, asked[[where[p] for p in prompts]])  # both L2-normalized
    return np.hstack([shape, relevance[:, None], answer.layer_mean.astype(np.float64)])


@dataclass
class RewardModel:
    features: str
    mean: list[float]
    std: list[float]
    weights: list[float]
    valid_fraction: float
    seed: int
    card: dict[str, Any]  # annotator file → report card on the validation prompts

    def scores(self, phi: np.ndarray) -> np.ndarray:
        return ((phi - np.asarray(self.mean)) / np.asarray(self.std)) @ np.asarray(self.weights)

    def trained_on(self, prompt_id: str) -> bool:
        return not held_out(prompt_id, self.valid_fraction, self.seed)


def read_model(store: Any, key: str) -> RewardModel:
    return RewardModel(**json.loads(store.read_file(key, MODEL_FILE)))


def train(ctx: StageContext) -> StageOutput:
    """Fit on the training prompts' decisive pairs of every verdict file; card on the validation prompts."""
    from sklearn.linear_model import LogisticRegression

    p: RewardConfig = ctx.params
    if not p.verdicts:
        raise BadInputError("the reward scorer trains on verdict files: set iqs.verdicts (or judge.verdicts), "
                            "e.g. AlpacaEval's annotations", field="verdicts")
    files = {path: read_answers(path, p.prompts) for path in p.verdicts}
    answers = list({(a.prompt_id, a.generator, a.text): a for found in files.values() for a in found}.values())
    index = {(a.prompt_id, a.generator, a.text): i for i, a in enumerate(answers)}
    ctx.log.info("reward: features (%s) of %d answers", p.features, len(answers))
    phi = features_of([a.instruction for a in answers], [a.text for a in answers], p.features, p.batch_size)
    training = [pair for path, found in files.items()
                for pair in decisive_pairs(found, path, p.min_gap, lambda i: not held_out(i, p.valid_fraction, p.seed),
                                           p.pairs_per_prompt, p.seed)]
    if not training:
        raise BadInputError("no decisive pair among the training prompts: more verdicts, or a smaller min_gap",
                            field="verdicts")
    used = sorted({index[_key(a)] for pair in training for a in (pair.first, pair.second)})
    mean, std = phi[used].mean(axis=0), phi[used].std(axis=0) + 1e-9
    z = (phi - mean) / std
    differences = np.stack([z[index[_key(pair.first)]] - z[index[_key(pair.second)]] for pair in training])
    preferred = np.array([pair.first_preferred for pair in training])
    fit = LogisticRegression(C=p.c, fit_intercept=False, max_iter=2000).fit(
        np.vstack([differences, -differences]), np.concatenate([preferred, ~preferred]))
    model = RewardModel(p.features, mean.tolist(), std.tolist(), fit.coef_[0].tolist(), p.valid_fraction, p.seed, {})
    scored = model.scores(phi)
    by_answer = {(a.prompt_id, a.generator): float(scored[i]) for i, a in enumerate(answers)}
    for path, found in files.items():
        valid = decisive_pairs(found, path, p.min_gap, lambda i: held_out(i, p.valid_fraction, p.seed))
        model.card[path] = report_card(valid, by_answer)
    stats = {"scorer": "reward", "features": p.features, "answers": len(answers), "train_pairs": len(training),
             "card": model.card}
    ctx.log.info("reward: %d training pairs; validation: %s", len(training),
                 {path.rsplit("/", 1)[-1]: card for path, card in model.card.items()})
    return StageOutput(files={MODEL_FILE: json.dumps(asdict(model), indent=1),
                              "model.json": json.dumps({"scorer": "reward", "features": p.features})},
                       stats=stats, report=card_markdown(model.card, p.features, len(training)))


def _key(answer: Answer) -> tuple[str, str, str]:
    return answer.prompt_id, answer.generator, answer.text


def card_markdown(card: dict[str, Any], features: str, pairs: int) -> str:
    lines = [f"## Reward model ({features} features, {pairs:,} training pairs)", "",
             "Agreement with each annotator on the decisive pairs of prompts it never trained on:", "",
             "| annotations | pairs | this judge | the longer answer wins | the first answer wins |",
             "|---|---:|---:|---:|---:|"]
    for path, row in card.items():
        lines.append(f"| {path.rsplit('/', 1)[-1]} | {row['pairs']:,} | {_pct(row['agreement'])} | "
                     f"{_pct(row['longer_wins'])} | {_pct(row['first_wins'])} |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def open_reward(inputs: ScorerInputs) -> Scoring:
    """Scores of conversation rows: the first user turn is the prompt, the last assistant turn the answer."""
    model = read_model(inputs.store, inputs.iqs_model.key)

    def score(rows: Any) -> Scores:
        conversations = rows.column("messages").to_pylist()
        prompts = [next((m["content"] for m in c if m["role"] == "user"), "") for c in conversations]
        answers = [next((m["content"] for m in reversed(c) if m["role"] == "assistant"), "") for c in conversations]
        return Scores(model.scores(features_of(prompts, answers, model.features, inputs.params.batch_size)))

    return Scoring(score, model=inputs.iqs_model.key, facts={"card": model.card})


SCORER = Scorer("reward", RewardConfig, open_reward, train=train, part_rows=4096,
                description="a Bradley-Terry reward model trained on public judge verdicts (AlpacaEval's GPT-4 "
                            "annotations): the bundled judge of answers")
