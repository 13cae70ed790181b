"""Judged answers across an ablation: win rates against a baseline arm with intervals, length-controlled.

Each judgement is one arm's answers at one training seed against the baseline arm's at the same seed (random
by default), on one prompt set: a verdict per prompt (1 the arm's answer is better, 0 the baseline's, 0.5 a
tie; undecided prompts left out) and both answers' lengths.

- **Win rate**: the mean verdict over prompts and seeds (ties count half). Its 95% interval is a paired
  bootstrap over prompts and seeds: each resample draws the prompts (the same for every seed) and the seeds
  with replacement.
- **Winning score** (CaR's): (wins - losses) / n + 1 over every prompt and seed; 1 is a draw.
- **Length-controlled win rate** (AlpacaEval 2.0's idea): judges reward length, so a logistic model of each
  verdict on the arm (one term per arm, no intercept) and on tanh of the length difference (the arm's answer's
  characters minus the baseline's, divided by their standard deviation over the whole prompt set) is fitted to
  every judgement of the prompt set at once; an arm's LC win rate is the model's prediction for it at zero
  length difference. AlpacaEval also fits a difficulty term per instruction, on its own 805 prompts and many
  models; with a few arms that term has too little to learn from, so it is left out. A tie is half a win and
  half a loss (two rows with weights 0.5). The interval is a bootstrap of the prompts, the model refitted each
  time.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LC_RESAMPLES = 200  # each refits the logistic model


@dataclass(frozen=True)
class Judgement:
    model: str  # the arm
    seed: int | None
    prompt_set: str
    prompt_ids: list[str]
    verdict: np.ndarray  # 1, 0.5, 0 or nan (undecided)
    first_chars: np.ndarray  # the arm's answers
    second_chars: np.ndarray  # the baseline's


def _matrix(found: Sequence[Judgement]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verdicts, length differences, answer lengths) as seeds x prompts, on the prompts every seed judged."""
    prompts = sorted(set.intersection(*(set(j.prompt_ids) for j in found)))
    rows = []
    for j in found:
        where = {p: i for i, p in enumerate(j.prompt_ids)}
        at = [where[p] for p in prompts]
        rows.append((j.verdict[at], j.first_chars[at] - j.second_chars[at], j.first_chars[at]))
    return tuple(np.stack([r[k] for r in rows]).astype(np.float64) for k in range(3))  # type: ignore[return-value]


def win_rate(verdicts: np.ndarray, resamples: int = RESAMPLES, confidence: float = 0.95,
             seed: int = 0) -> dict[str, float]:
    """The mean verdict of a seeds x prompts matrix (nan ignored) and its paired bootstrap interval."""
    rng = np.random.default_rng(seed)
    n_seeds, n_prompts = verdicts.shape
    decided = ~np.isnan(verdicts)
    values = np.where(decided, verdicts, 0.0)
    estimates = []
    for _ in range(resamples):
        rows, cols = rng.integers(0, n_seeds, n_seeds), rng.integers(0, n_prompts, n_prompts)
        count = decided[np.ix_(rows, cols)].sum()
        estimates.append(values[np.ix_(rows, cols)].sum() / count if count else np.nan)
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(estimates, [tail, 1 - tail])
    return {"estimate": round(float(values.sum() / max(decided.sum(), 1)), 4), "low": round(float(low), 4),
            "high": round(float(high), 4)}


def length_controlled(arms: dict[str, tuple[np.ndarray, np.ndarray]], resamples: int = LC_RESAMPLES,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """Each arm's win rate at zero length difference (the module's doc), from (verdicts, length differences)
    matrices over one prompt set, with a bootstrap interval over prompts."""
    names = sorted(arms)
    scale = np.nanstd(np.concatenate([d.ravel() for _, d in arms.values()])) or 1.0

    def fit(columns: dict[str, np.ndarray]) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression

        x, y, w = [], [], []
        for k, name in enumerate(names):
            verdicts, differences = arms[name][0][:, columns[name]], arms[name][1][:, columns[name]]
            keep = ~np.isnan(verdicts)
            v, d = verdicts[keep], np.tanh(differences[keep] / scale)
            one_hot = np.zeros((len(v), len(names)))
            one_hot[:, k] = 1
            rows = np.hstack([one_hot, d[:, None]])
            x += [rows, rows]
            y += [np.ones(len(v)), np.zeros(len(v))]
            w += [v, 1 - v]
        x, y, w = np.vstack(x), np.concatenate(y), np.concatenate(w)
        model = LogisticRegression(fit_intercept=False, C=1e4, max_iter=1000).fit(x, y, sample_weight=w)
        return {name: float(1 / (1 + np.exp(-model.coef_[0][k]))) for k, name in enumerate(names)}

    every = {name: np.arange(arms[name][0].shape[1]) for name in names}
    estimate = fit(every)
    rng = np.random.default_rng(seed)
    draws = defaultdict(list)
    for _ in range(resamples):
        picked = {name: rng.integers(0, len(cols), len(cols)) for name, cols in every.items()}
        for name, value in fit(picked).items():
            draws[name].append(value)
    tail = (1 - confidence) / 2
    return {name: {"estimate": round(estimate[name], 4), "low": round(float(np.quantile(draws[name], tail)), 4),
                   "high": round(float(np.quantile(draws[name], 1 - tail)), 4)} for name in names}


def judged_table(judgements: Sequence[Judgement], baseline: str, resamples: int = RESAMPLES,
                 confidence: float = 0.95) -> list[dict]:
    """One row per prompt set and arm: win rate and LC win rate against `baseline` with intervals, winning
    score, wins/ties/losses, mean answer lengths, seeds and prompts."""
    by_set: dict[str, dict[str, list[Judgement]]] = defaultdict(lambda: defaultdict(list))
    for j in judgements:
        by_set[j.prompt_set][j.model].append(j)
    rows = []
    for prompt_set, arms in by_set.items():
        matrices = {name: _matrix(sorted(found, key=lambda j: (j.seed is None, j.seed)))
                    for name, found in arms.items()}
        controlled = length_controlled({n: (m[0], m[1]) for n, m in matrices.items()}, confidence=confidence)
        for name, (verdicts, differences, lengths) in matrices.items():
            decided = verdicts[~np.isnan(verdicts)]
            wins, losses = int((decided == 1).sum()), int((decided == 0).sum())
            baseline_lengths = lengths - differences
            rows.append({"prompt_set": prompt_set, "model": name, "baseline": baseline, "seeds": verdicts.shape[0],
                         "prompts": verdicts.shape[1], "win_rate": win_rate(verdicts, resamples, confidence),
                         "lc_win_rate": controlled[name], "wins": wins, "losses": losses,
                         "ties": len(decided) - wins - losses, "undecided": int(np.isnan(verdicts).sum()),
                         "winning_score": round((wins - losses) / len(decided) + 1, 4) if len(decided) else None,
                         "mean_chars": round(float(lengths.mean()), 1),
                         "baseline_mean_chars": round(float(baseline_lengths.mean()), 1)})
    return rows


def order_agreement(judged: dict[str, float], losses: dict[str, float]) -> dict:
    """Whether the judged order of arms (higher win rate first) is the loss order (lower loss first): the pairs
    of arms both orders rank alike, and Kendall's tau."""
    names = sorted(set(judged) & set(losses))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    agree = [np.sign(judged[a] - judged[b]) == np.sign(losses[b] - losses[a]) for a, b in pairs]
    tau = (2 * sum(agree) - len(pairs)) / len(pairs) if pairs else None
    return {"arms": names, "judged_order": sorted(names, key=lambda n: -judged[n]),
            "loss_order": sorted(names, key=lambda n: losses[n]), "pairs_agreeing": int(sum(agree)),
            "pairs": len(pairs), "kendall_tau": None if tau is None else round(tau, 3),
            "agree": bool(pairs) and all(agree)}
