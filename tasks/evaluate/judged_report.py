"""The judged part of an ablation's report: the table, its sentence, the order of arms beside the loss order, the
judge's report card, a win-rate chart with intervals and side-by-side answers."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from tasks.evaluate.judged import order_agreement
from tasks.figures import png, subplots

SIDE_BY_SIDE = 20


def _pct(interval: dict[str, float]) -> str:
    return f"{100 * interval['estimate']:.1f}% [{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"


def judged_markdown(rows: list[dict], losses: dict[str, float], baseline: str, judge: dict[str, Any],
                    loss_set: str) -> dict[str, Any]:
    """{"markdown", "sentence", "order"}: the table and what it says."""
    lines = ["## Judged answers", "", f"Judge: {judge.get('judged_by')}.", ""]
    for annotator, card in (judge.get("card") or {}).items():
        lines.append(f"- Its report card on {annotator.rsplit('/', 1)[-1]}: agreement "
                     f"{100 * (card['agreement'] or 0):.1f}% on {card['pairs']:,} pairs of prompts it never trained "
                     f"on, where the longer answer wins {100 * card['longer_wins']:.1f}% and the first answer "
                     f"{100 * card['first_wins']:.1f}%.")
    lines += ["", "| prompt set | arm | against | seeds | prompts | win rate [95%] | length-controlled [95%] | "
                  "winning score | wins / ties / losses | mean chars (arm / the other) |",
              "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        lines.append(f"| {row['prompt_set']} | {row['model']} | {row['baseline']} | {row['seeds']} | "
                     f"{row['prompts']} | {_pct(row['win_rate'])} | {_pct(row['lc_win_rate'])} | "
                     f"{row['winning_score']} | {row['wins']} / {row['ties']} / {row['losses']} | "
                     f"{row['mean_chars']:.0f} / {row['baseline_mean_chars']:.0f} |")
    first_set = rows[0]["prompt_set"] if rows else None
    judged = {r["model"]: r["win_rate"]["estimate"] for r in rows
              if r["prompt_set"] == first_set and r["baseline"] == baseline}
    if baseline in losses:
        judged[baseline] = 0.5
    order = order_agreement(judged, losses)
    clauses = []
    for row in rows:
        rate, lc = row["win_rate"], row["lc_win_rate"]
        beyond = "beats" if rate["low"] > 0.5 else "loses to" if rate["high"] < 0.5 else "ties with"
        clauses.append(f"{row['model']} {beyond} {row['baseline']} on {row['prompt_set']} ({_pct(rate)}; "
                       f"length-controlled {_pct(lc)})")
    sentence = "; ".join(clauses) + "." if clauses else "Nothing was judged."
    lines += ["", f"**{sentence}**", "",
              f"Judged order on {first_set} (win rate against {baseline}): {' > '.join(order['judged_order'])}; loss "
              f"order on {loss_set}: {' > '.join(order['loss_order'])} ({order['pairs_agreeing']} of {order['pairs']} "
              f"pairs of arms ordered alike, Kendall's tau {order['kendall_tau']}).", "",
              "Win rate: the mean verdict over prompts and seeds, ties half; its interval a paired bootstrap over "
              "prompts and seeds. Length-controlled: a logistic model of the verdicts on the arm and tanh of the "
              "standardized length difference, read at zero difference (tasks/evaluate/judged.py)."]
    return {"markdown": "\n".join(lines), "sentence": sentence, "order": order}


def side_by_side(table: pa.Table, which: tuple[str, int, str], baseline: str,
                 more: dict[str, pa.Table] | None = None) -> dict[str, Any]:
    """The first `SIDE_BY_SIDE` prompts of one judgement: both answers and the verdict; `more`: the same arm's
    judgements against other arms (full), whose answers and verdicts join by prompt."""
    model, seed, prompt_set = which
    others = {name: {r["prompt_id"]: r for r in found.to_pylist()} for name, found in (more or {}).items()}
    rows = []
    for r in table.slice(0, SIDE_BY_SIDE).to_pylist():
        row = {"prompt": r["prompt"], model: r["first"], baseline: r["second"], "verdict": r["verdict"]}
        for name, found in others.items():
            match = found.get(r["prompt_id"], {})
            row[name], row[f"verdict vs {name}"] = match.get("second"), match.get("verdict")
        rows.append(row)
    return {"arm": model, "seed": seed, "prompt_set": prompt_set, "baseline": baseline, "others": list(others),
            "rows": rows}


def side_by_side_markdown(shown: dict[str, Any]) -> str:
    arm, baseline, others = shown["arm"], shown["baseline"], shown.get("others", [])
    names = " and ".join([arm, baseline, *others])
    lines = [f"## {names} side by side ({shown['prompt_set']}, seed {shown['seed']}, {len(shown['rows'])} prompts)",
             "", "| prompt | " + " | ".join([arm, baseline, *others]) + f" | verdict vs {baseline} | "
             + "".join(f"verdict vs {o} | " for o in others), "|---|" + "---|" * (2 * len(others) + 3)]
    for row in shown["rows"]:
        answers = " | ".join(_cell(row[name], 300) for name in (arm, baseline, *others))
        verdicts = " | ".join(str(row[key]) for key in ("verdict", *(f"verdict vs {o}" for o in others)))
        lines.append(f"| {_cell(row['prompt'], 160)} | {answers} | {verdicts} |")
    return "\n".join(lines)


def _cell(text: str, limit: int) -> str:
    flat = " ".join((text or "").split()).replace("|", "\\|")
    return (flat[:limit] + "…") if len(flat) > limit else flat or "(empty)"


def win_rate_chart_png(rows: list[dict], confidence: float) -> bytes:
    """Per prompt set: each arm's win rate and length-controlled win rate against the baseline, with intervals."""
    sets = list(dict.fromkeys(r["prompt_set"] for r in rows))
    fig, axes = subplots(1, len(sets), figsize=(max(6, 1.6 * len(rows) / max(len(sets), 1) + 3) * len(sets), 3.8),
                         squeeze=False)
    for ax, prompt_set in zip(axes[0], sets):
        found = [r for r in rows if r["prompt_set"] == prompt_set]
        for offset, (key, color, name) in enumerate((("win_rate", "#4472c4", "win rate"),
                                                     ("lc_win_rate", "#ed7d31", "length-controlled"))):
            values = [r[key] for r in found]
            xs = [i + (offset - 0.5) * 0.38 for i in range(len(found))]
            ax.bar(xs, [100 * v["estimate"] for v in values], width=0.36, color=color, label=name,
                   yerr=[[100 * (v["estimate"] - v["low"]) for v in values],
                         [100 * (v["high"] - v["estimate"]) for v in values]], capsize=3)
        ax.axhline(50, color="black", lw=0.8)
        main = found[0]["baseline"]
        ax.set_xticks(range(len(found)), [r["model"] if r["baseline"] == main else f"{r['model']} vs {r['baseline']}"
                                          for r in found], rotation=30, ha="right", rotation_mode="anchor")
        ax.set(title=f"{prompt_set}: against {main} ({confidence:.0%} intervals)",
               ylabel="% of prompts won (ties half)", ylim=(0, 100))
        ax.legend(loc="upper right")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png(fig)
