"""The selection ablation's report: models (selectors and the base model) x training seeds -> eval loss.

`summarize_runs` computes every number once (a JSON-ready dict); the markdown table, the bar chart and the
plain sentence are drawn from it. Each selector is compared with the baseline selector (`random`) by the
paired bootstrap of `tasks.evaluate.stats` on the same evaluation rows; a model evaluated without a seed
(the base model) appears in the table and the chart but is no selector, so the sentence leaves it out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.errors import BadInputError
from tasks.evaluate.loss import RowLosses
from tasks.evaluate.stats import BETTER, CONFIDENCE, RESAMPLES, WORSE, compare, summarize
from tasks.figures import png, subplots

MINUS = "\u2212"
LEARNING_RATE_MARK = "@lr="  # a model trained at a learning rate of its own: `car@lr=6.7e-05`


@dataclass(frozen=True)
class EvalRun:
    model: str  # a selector, or the base model's name
    seed: int | None  # the training seed; None for a model that was not trained (the base model)
    eval_set: str
    losses: RowLosses


def _grouped(runs: Sequence[EvalRun]) -> dict[str, dict[str, list[EvalRun]]]:
    """eval set -> model -> runs (by seed), in order of first appearance."""
    grouped: dict[str, dict[str, list[EvalRun]]] = {}
    seen = set()
    for run in runs:
        key = (run.eval_set, run.model, run.seed)
        if key in seen:
            raise BadInputError(f"two results for model {run.model!r}, seed {run.seed} on {run.eval_set!r}")
        seen.add(key)
        grouped.setdefault(run.eval_set, {}).setdefault(run.model, []).append(run)
    return grouped


def summarize_runs(runs: Sequence[EvalRun], *, baseline: str = "random", resamples: int = RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Per evaluation set and model: the loss per seed, the mean over seeds with its interval and the paired
    difference to `baseline` with its interval and verdict."""
    if not runs:
        raise BadInputError("no evaluation results to report")
    sets = []
    for eval_set, models in _grouped(runs).items():
        if baseline not in models:
            raise BadInputError(f"no results of the baseline {baseline!r} on {eval_set!r} (models: "
                                f"{', '.join(models)})", field="baseline")
        reference = [r.losses for r in models[baseline]]
        rows = []
        for model, model_runs in models.items():
            losses = [r.losses for r in model_runs]
            summary = summarize(losses, resamples=resamples, confidence=confidence, seed=seed)
            against = baseline_of(model, baseline)
            if against not in models:
                raise BadInputError(f"no results of {against!r} on {eval_set!r} to compare {model!r} with",
                                    field="baseline")
            difference = None if model == against else \
                compare(losses, [r.losses for r in models[against]], resamples=resamples, confidence=confidence,
                        seed=seed)
            rows.append({"model": model, "trained": any(r.seed is not None for r in model_runs),
                         "per_seed": [{"seed": r.seed, "loss": r.losses.mean_loss} for r in model_runs],
                         "summary": summary.as_dict(),
                         "vs_baseline": difference.as_dict() if difference else None})
        first = reference[0]
        sets.append({"name": eval_set, "rows": len(first), "tokens": int(first.tokens.sum()), "models": rows})
    return {"baseline": baseline, "confidence": confidence, "resamples": resamples, "seed": seed,
            "eval_sets": sets}


def baseline_of(model: str, baseline: str) -> str:
    """The run a model is compared with: the baseline trained like it (`car@lr=6.7e-05` against
    `random@lr=6.7e-05`), the baseline itself for a model trained at the default rate. Only the learning rate is
    a training variant: `random@tokens=car` is a selection of its own, compared with plain `random`."""
    _, at, rate = model.rpartition(LEARNING_RATE_MARK)
    return f"{baseline}{LEARNING_RATE_MARK}{rate}" if at else baseline


# -- text -----------------------------------------------------------------------------------------------
def signed(value: float, digits: int = 3) -> str:
    text = f"{value:+.{digits}f}"
    return text.replace("-", MINUS)


def signed_interval(delta: dict[str, float]) -> str:
    return f"{signed(delta['estimate'])} [{signed(delta['low'])}, {signed(delta['high'])}]"


def markdown_table(summary: dict[str, Any]) -> str:
    baseline, share = summary["baseline"], f"{summary['confidence']:.0%}"
    lines = []
    for eval_set in summary["eval_sets"]:
        seeds = sorted({s["seed"] for m in eval_set["models"] for s in m["per_seed"] if s["seed"] is not None})
        lines += [f"### {eval_set['name']} ({eval_set['rows']:,} rows, {eval_set['tokens']:,} scored tokens)", "",
                  "| model | " + "".join(f"seed {s} | " for s in seeds)
                  + f"mean loss [{share}] | perplexity | \u0394 vs {baseline} [{share}] | beyond noise |",
                  "|---|" + "---:|" * (len(seeds) + 3) + "---|"]
        for model in eval_set["models"]:
            by_seed = {s["seed"]: s["loss"] for s in model["per_seed"]}
            loss, ppl = model["summary"]["loss"], model["summary"]["perplexity"]
            versus = model["vs_baseline"]
            cells = [model["model"], *(f"{by_seed[s]:.4f}" if s in by_seed else "\u2013" for s in seeds),
                     f"{loss['estimate']:.4f} [{loss['low']:.4f}, {loss['high']:.4f}]", f"{ppl['estimate']:.2f}",
                     signed_interval(versus["loss"]) if versus else "\u2013",
                     versus["verdict"].replace("_", " ") if versus else "baseline"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Loss: cross-entropy per supervised token (nats), over all scored tokens of the set. Intervals: "
                 f"{share} percentile bootstrap over the rows ({summary['resamples']:,} resamples, seed "
                 f"{summary['seed']}); where a model has several training seeds, each resample also redraws them. "
                 f"\u0394: the model's loss minus {baseline}'s on the same resampled rows (paired); 'better' and "
                 "'worse' mean the whole interval lies below or above zero.")
    return "\n".join(lines)


def verdict_sentence(summary: dict[str, Any]) -> str:
    """Which selectors beat the baseline beyond noise, on which set, with the difference and its interval."""
    baseline = summary["baseline"]
    verdicts: dict[str, dict[str, list[str]]] = {}
    for eval_set in summary["eval_sets"]:
        for model in eval_set["models"]:
            if model["vs_baseline"] and model["trained"]:
                found = f"{eval_set['name']} (\u0394 {signed_interval(model['vs_baseline']['loss'])})"
                verdicts.setdefault(model["model"], {}).setdefault(model["vs_baseline"]["verdict"], []).append(found)
    if not verdicts:
        return f"No selector besides {baseline} was evaluated."
    clauses = []
    for model, by_verdict in verdicts.items():
        against = baseline_of(model, baseline)
        phrases = {BETTER: f"beats {against} beyond noise on ", WORSE: f"is worse than {against} beyond noise on "}
        parts = [phrases.get(verdict, f"does not beat {against} beyond noise on ") + " and on ".join(found)
                 for verdict, found in sorted(by_verdict.items(), key=lambda kv: (kv[0] != BETTER, kv[0] == WORSE))]
        clauses.append(f"{model} " + ", and ".join(parts))
    return "; ".join(clauses) + "."


# -- chart ----------------------------------------------------------------------------------------------
def bar_chart_png(summary: dict[str, Any]) -> bytes:
    """Per evaluation set: the mean loss of every model, and each selector's difference to the baseline, with
    intervals."""

    sets = summary["eval_sets"]
    fig, axes = subplots(len(sets), 2, figsize=(11, 3.4 * len(sets)), squeeze=False)
    for (left, right), eval_set in zip(axes, sets):
        models = eval_set["models"]
        names = [m["model"] for m in models]
        losses = [m["summary"]["loss"] for m in models]
        colors = ["#a5a5a5" if not m["trained"] else "#ed7d31" if m["vs_baseline"] is None else "#4472c4"
                  for m in models]
        _bars(left, names, losses, colors)
        lows = [x["low"] for x in losses]
        highs = [x["high"] for x in losses]
        margin = 0.15 * (max(highs) - min(lows) or 1.0)
        left.set_ylim(min(lows) - margin, max(highs) + margin)  # the differences would vanish on a 0-based axis
        left.set(title=f"{eval_set['name']}: mean loss ({summary['confidence']:.0%} interval)",
                 ylabel="nats / supervised token (axis not from 0)")
        compared = [m for m in models if m["vs_baseline"] and m["trained"]]  # the base model would dwarf them
        deltas = [m["vs_baseline"]["loss"] for m in compared]
        _bars(right, [m["model"] for m in compared], deltas,
              ["#70ad47" if m["vs_baseline"]["verdict"] == BETTER else "#c00000" if m["vs_baseline"]["verdict"]
               == WORSE else "#a5a5a5" for m in compared])
        right.axhline(0, color="black", lw=0.8)
        right.set(title=f"{eval_set['name']}: loss minus {summary['baseline']} (paired)",
                  ylabel="\u0394 nats / token (below 0: better)")
    fig.tight_layout()
    return png(fig)


def _bars(ax: Any, names: list[str], intervals: list[dict[str, float]], colors: list[str]) -> None:
    heights = [x["estimate"] for x in intervals]
    errors = [[h - x["low"] for h, x in zip(heights, intervals)], [x["high"] - h for h, x in zip(heights, intervals)]]
    ax.bar(range(len(names)), heights, yerr=errors, capsize=4, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", rotation_mode="anchor")  # long names
    ax.grid(axis="y", alpha=0.3)
