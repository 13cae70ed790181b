"""Mean loss and perplexity with bootstrap intervals, and the paired bootstrap of a difference between models.

The primary number is the token-weighted mean loss: the nats summed over every scored token of the set
divided by the number of those tokens. It is what training minimizes (the train stage's eval loss), and its
exp is the set's perplexity in the usual sense. The row mean (each row's mean loss, averaged over rows) is
given beside it: it counts a short answer as much as a long one, so it shows when a difference comes from a
few long rows only.

Intervals are percentile intervals over bootstrap resamples of the rows (2,000, 95% by default).
Comparisons resample the same rows for every model (a paired bootstrap): a row that is hard for every model
then moves both sides together, so the interval of a difference is much narrower than either model's own.
A model may stand for several training runs (one selector trained with seeds 0..S-1): then each resample
also draws S of its runs with replacement, independently per model, and averages their losses, so an
advantage must hold across training seeds as well as across rows. With one run per model this is the plain
paired bootstrap.

Deterministic for a seed: the rows of every resample come from `np.random.default_rng([seed, 0])` (n row
indices per resample, resample after resample) and, where model k has S > 1 runs, its runs from
`np.random.default_rng([seed, 1 + k])` (S indices per resample).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tasks.errors import BadInputError
from tasks.evaluate.loss import RowLosses

RESAMPLES = 2000
CONFIDENCE = 0.95
CHUNK_CELLS = 2_000_000  # row draws held in memory at once (resamples x rows)
BETTER, WORSE, WITHIN_NOISE = "better", "worse", "within_noise"


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def exp(self) -> Interval:
        return Interval(float(np.exp(self.estimate)), float(np.exp(self.low)), float(np.exp(self.high)))


@dataclass(frozen=True)
class LossSummary:
    rows: int
    tokens: int  # scored tokens of the set (the first run's, where runs differ)
    runs: int
    loss: Interval  # token-weighted: the primary number
    row_mean_loss: Interval
    perplexity: Interval  # exp(loss); the percentile interval maps through exp exactly

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """candidate - baseline; a negative loss difference means the candidate predicts the rows better."""

    loss: Interval
    row_mean_loss: Interval
    verdict: str  # BETTER (the whole interval below 0), WORSE (above 0) or WITHIN_NOISE

    @property
    def beats(self) -> bool:
        return self.verdict == BETTER

    def as_dict(self) -> dict:
        return asdict(self)


Runs = RowLosses | Sequence[RowLosses]


def as_runs(runs: Runs) -> list[RowLosses]:
    runs = [runs] if isinstance(runs, RowLosses) else list(runs)
    if not runs:
        raise BadInputError("no evaluation runs to summarize")
    return runs


def check_same_rows(groups: Sequence[Sequence[RowLosses]]) -> None:
    """Every run must score the same rows in the same order: paired statistics compare row by row."""
    reference = groups[0][0].ids
    for runs in groups:
        for run in runs:
            if run.ids != reference:
                missing = sorted(set(reference) - set(run.ids))[:3]
                extra = sorted(set(run.ids) - set(reference))[:3]
                where = (f"missing ids {missing}, extra ids {extra}" if missing or extra else
                         f"the same ids in another order (first difference at row "
                         f"{next(i for i, (a, b) in enumerate(zip(reference, run.ids)) if a != b)})")
                raise BadInputError(f"runs to compare scored different rows: {where}", field="id")


def bootstrap(groups: Sequence[Sequence[RowLosses]], *, row_mean: bool = False, resamples: int = RESAMPLES,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per group (model): the loss on all rows averaged over its runs, and its value on each resample
    (shape groups x resamples), every group on the same resampled rows."""
    check_same_rows(groups)
    n = len(groups[0][0])
    numerators, denominators = [], []
    for runs in groups:
        numerators.append(np.stack([r.loss_mean if row_mean else r.loss_sum for r in runs], axis=1))
        denominators.append(np.ones((n, len(runs))) if row_mean else
                            np.stack([r.tokens for r in runs], axis=1).astype(np.float64))
    point = np.array([float(np.mean(num.sum(0) / den.sum(0))) for num, den in zip(numerators, denominators)])
    row_rng = np.random.default_rng([seed, 0])
    run_rngs = [np.random.default_rng([seed, 1 + k]) for k in range(len(groups))]
    values = np.empty((len(groups), resamples))
    chunk = max(1, CHUNK_CELLS // n)
    for begin in range(0, resamples, chunk):
        size = min(chunk, resamples - begin)
        drawn = row_rng.integers(0, n, size=(size, n))
        # how often each row was drawn in each resample: resampled sums become one matrix product
        counts = np.bincount((drawn + n * np.arange(size)[:, None]).ravel(), minlength=size * n)
        counts = counts.reshape(size, n).astype(np.float64)
        for k, (num, den) in enumerate(zip(numerators, denominators)):
            per_run = (counts @ num) / (counts @ den)  # resamples x runs
            if per_run.shape[1] > 1:
                picks = run_rngs[k].integers(0, per_run.shape[1], size=per_run.shape)
                per_run = np.take_along_axis(per_run, picks, axis=1)
            values[k, begin:begin + size] = per_run.mean(axis=1)
    return point, values


def interval(estimate: float, values: np.ndarray, confidence: float) -> Interval:
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(estimate), float(low), float(high))


def check_settings(resamples: int, confidence: float) -> None:
    if resamples < 100:
        raise BadInputError(f"{resamples} bootstrap resamples: use at least 100", field="eval.resamples")
    if not 0 < confidence < 1:
        raise BadInputError(f"confidence {confidence}: must be between 0 and 1", field="eval.confidence")


def summarize(runs: Runs, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
              seed: int = 0) -> LossSummary:
    """Mean loss, row-mean loss and perplexity of one model (or one selector's runs) with their intervals."""
    check_settings(resamples, confidence)
    runs = as_runs(runs)
    found = {}
    for name, row_mean in (("loss", False), ("row_mean_loss", True)):
        point, values = bootstrap([runs], row_mean=row_mean, resamples=resamples, seed=seed)
        found[name] = interval(point[0], values[0], confidence)
    return LossSummary(rows=len(runs[0]), tokens=int(runs[0].tokens.sum()), runs=len(runs), loss=found["loss"],
                       row_mean_loss=found["row_mean_loss"], perplexity=found["loss"].exp())


def compare(candidate: Runs, baseline: Runs, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
            seed: int = 0) -> Difference:
    """The paired bootstrap of candidate - baseline and whether the candidate is better beyond noise."""
    check_settings(resamples, confidence)
    groups = [as_runs(candidate), as_runs(baseline)]
    found = {}
    for name, row_mean in (("loss", False), ("row_mean_loss", True)):
        point, values = bootstrap(groups, row_mean=row_mean, resamples=resamples, seed=seed)
        found[name] = interval(point[0] - point[1], values[0] - values[1], confidence)
    delta = found["loss"]
    verdict = BETTER if delta.high < 0 else WORSE if delta.low > 0 else WITHIN_NOISE
    return Difference(loss=delta, row_mean_loss=found["row_mean_loss"], verdict=verdict)
