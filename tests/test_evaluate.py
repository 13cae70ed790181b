"""The evaluation core (issue 16): per-row loss against plain loops, bootstrap statistics on known
distributions, the held-out split, the gold set, the ablation report, answers from an evaluated model."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import make_record, records_to_table
from tasks.errors import BadInputError
from tasks.evaluate import holdout, loss, stats
from tasks.evaluate.gold import read_gold
from tasks.evaluate.loss import RowLosses
from tasks.evaluate.report import EvalRun, bar_chart_png, markdown_table, summarize_runs, verdict_sentence

QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Give three tips for staying healthy.", "Eat well, sleep enough and exercise."),
    ("Write a short poem about the sea.", "The sea is wide and blue and deep, the waves are slow."),
    ("Classify the sentiment: I love it.", "positive"),
    ("How does ibuprofen interact with aspirin?", "Take them apart; ask your pharmacist."),
]


def conversation(turns: list[tuple[str, str]], row: int, system: str | None = None) -> dict:
    messages = [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return make_record(messages=messages, system=system, uri="eval.jsonl", fmt="alpaca", row=row)


def eval_records() -> list[dict]:
    """Single- and multi-turn rows of different lengths (several supervised spans per row)."""
    rows = [conversation([pair], i) for i, pair in enumerate(QA)]
    rows += [conversation([QA[0], QA[2]], 10), conversation([QA[3], QA[1], QA[4]], 11, system="Be brief."),
             conversation([(QA[2][0] + " Please.", QA[2][1] * 3)], 12)]
    return rows


@pytest.fixture(scope="module")
def adapter(tiny_confident_lm, tmp_path_factory) -> Path:
    """A real LoRA adapter on the peaked model, its B matrices set away from their zero init."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_confident_lm),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenized(tiny_confident_lm) -> pa.Table:
    from transformers import AutoTokenizer

    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    encoder = ConversationEncoder(AutoTokenizer.from_pretrained(tiny_confident_lm), get_template("chatml"),
                                  max_length=256)
    return encoder.encode(eval_records()).table


def plain_loop(model, table: pa.Table) -> tuple[list[float], list[int]]:
    """The reference: one row at a time, the model's own loss and the number of labels it counts."""
    import torch

    means, counts = [], []
    with torch.no_grad():
        for input_ids, labels in zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist()):
            out = model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([labels]))
            means.append(float(out.loss))
            counts.append(sum(t != -100 for t in labels[1:]))
    return means, counts


def scored_rows(model_folder: Path, table: pa.Table, adapter_folder: Path | None = None) -> loss.TokenRows:
    vocab_size, limit = loss.model_limits(model_folder, adapter_folder)
    return loss.check_rows(table, source="eval", vocab_size=vocab_size, max_positions=limit)


# -- per-row loss -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_adapter", [False, True])
def test_row_losses_equal_a_plain_per_row_loop(tiny_confident_lm, adapter, tokenized, with_adapter):
    model = loss.load_for_eval(tiny_confident_lm, adapter if with_adapter else None)
    means, counts = plain_loop(model, tokenized)
    rows = scored_rows(tiny_confident_lm, tokenized, adapter if with_adapter else None)
    assert len(set(len(x) for x in rows.input_ids)) > 3  # lengths differ: batches are padded
    for batch_size in (1, 3, 8):
        advanced = []
        result = loss.row_losses(model, rows, batch_size=batch_size, advance=advanced.append)
        assert result.ids == tokenized.column("id").to_pylist()  # the table's order, not the length order
        assert result.tokens.tolist() == counts
        assert np.abs(result.loss_mean - np.array(means)).max() < 1e-5
        assert np.abs(result.loss_sum - np.array(means) * np.array(counts)).max() < 1e-4
        assert sum(advanced) == tokenized.num_rows and len(advanced) == -(-tokenized.num_rows // batch_size)
    assert np.ptp(means) > 0.5  # rows differ well beyond the tolerance


def test_the_adapter_changes_the_losses(tiny_confident_lm, adapter, tokenized):
    base = loss.score_table(tokenized, tiny_confident_lm, source="eval")
    tuned = loss.score_table(tokenized, tiny_confident_lm, adapter, source="eval")
    assert np.abs(base.loss_mean - tuned.loss_mean).min() > 1e-3
    back = RowLosses.from_table(tuned.to_table())
    assert back.ids == tuned.ids and np.array_equal(back.loss_sum, tuned.loss_sum)
    assert tuned.to_table().schema == loss.LOSS_SCHEMA


def _edited(table: pa.Table, row: int, **columns) -> pa.Table:
    records = table.to_pylist()
    records[row].update(columns)
    return pa.Table.from_pylist(records, schema=table.schema)


def test_rows_that_cannot_be_scored_are_named_before_the_model_loads(tokenized):
    def error(table, vocab_size=512, max_positions=256):
        with pytest.raises(BadInputError) as info:
            loss.check_rows(table, source="eval.parquet", vocab_size=vocab_size, max_positions=max_positions)
        return info.value

    first = tokenized.to_pylist()[2]
    found = error(_edited(tokenized, 2, labels=first["labels"][:-1]))
    assert (found.file, found.row, found.field) == ("eval.parquet", 2, "labels") and "tokens but labels" in str(found)
    found = error(_edited(tokenized, 3, input_ids=[*first["input_ids"][:-1], 9999], labels=first["labels"]))
    assert (found.row, found.field) == (3, "input_ids") and "9999" in str(found)
    found = error(tokenized, max_positions=20)
    assert found.field == "input_ids" and "format.max_length" in str(found)
    assert len(tokenized.column("input_ids")[found.row].as_py()) > 20
    only_first = [first["input_ids"][0]] + [-100] * (len(first["labels"]) - 1)
    found = error(_edited(tokenized, 4, input_ids=first["input_ids"], labels=only_first))
    assert (found.row, found.field) == (4, "labels") and "no supervised token" in str(found)
    assert error(tokenized.slice(0, 0)).file == "eval.parquet"
    assert error(tokenized.drop_columns(["labels"])).field == "labels"


# -- statistics ----------------------------------------------------------------------------------------------
def synthetic(rng: np.random.Generator, n: int, row_means: np.ndarray | None = None,
              ids: list[str] | None = None) -> RowLosses:
    """Rows of 1 + Poisson(30) tokens whose mean loss is Gamma(4, 0.5) unless given: true mean 2.0 either way."""
    tokens = 1 + rng.poisson(30, n)
    means = rng.gamma(4.0, 0.5, n) if row_means is None else row_means
    return RowLosses(ids or [f"r{i}" for i in range(n)], tokens * means, tokens)


def test_bootstrap_intervals_cover_the_true_mean():
    rng = np.random.default_rng(7)
    trials, covered = 300, {"loss": 0, "row_mean_loss": 0}
    for trial in range(trials):
        summary = stats.summarize(synthetic(rng, 200), resamples=1000, seed=trial)
        for name in covered:
            interval = getattr(summary, name)
            covered[name] += interval.low <= 2.0 <= interval.high
    for name, hits in covered.items():
        assert 0.91 <= hits / trials <= 0.985, (name, hits / trials)


def test_summary_is_deterministic_for_a_seed_and_perplexity_is_exp_loss():
    runs = synthetic(np.random.default_rng(0), 300)
    a, b = stats.summarize(runs, seed=3), stats.summarize(runs, seed=3)
    assert a == b and stats.summarize(runs, seed=4).loss != a.loss
    assert a.loss.estimate == pytest.approx(runs.loss_sum.sum() / runs.tokens.sum())
    assert a.row_mean_loss.estimate == pytest.approx(runs.loss_mean.mean())
    assert a.perplexity.estimate == pytest.approx(np.exp(a.loss.estimate))
    assert a.perplexity.low == pytest.approx(np.exp(a.loss.low)) and a.loss.low < a.loss.estimate < a.loss.high
    assert (a.rows, a.tokens, a.runs) == (300, int(runs.tokens.sum()), 1)


def loop_bootstrap(groups: list[list[RowLosses]], resamples: int, seed: int) -> np.ndarray:
    """The documented draws, one resample at a time: rows from rng([seed, 0]), runs of model k from
    rng([seed, 1 + k]); each model's value is the mean over its drawn runs of the token-weighted loss."""
    n = len(groups[0][0])
    row_rng = np.random.default_rng([seed, 0])
    run_rngs = [np.random.default_rng([seed, 1 + k]) for k in range(len(groups))]
    out = np.empty((len(groups), resamples))
    for b in range(resamples):
        rows = row_rng.integers(0, n, size=n)
        for k, runs in enumerate(groups):
            chosen = run_rngs[k].integers(0, len(runs), size=len(runs)) if len(runs) > 1 else [0]
            out[k, b] = np.mean([runs[j].loss_sum[rows].sum() / runs[j].tokens[rows].sum() for j in chosen])
    return out


def test_vectorized_bootstrap_equals_a_plain_loop(monkeypatch):
    rng = np.random.default_rng(1)
    groups = [[synthetic(rng, 50) for _ in range(3)], [synthetic(rng, 50)]]
    monkeypatch.setattr(stats, "CHUNK_CELLS", 50 * 7)  # 7 resamples per chunk: the chunks join seamlessly
    point, values = stats.bootstrap(groups, resamples=30, seed=5)
    assert np.abs(values - loop_bootstrap(groups, 30, 5)).max() < 1e-12
    assert point[0] == pytest.approx(np.mean([r.mean_loss for r in groups[0]]))


def test_paired_difference_cancels_row_difficulty_and_covers_the_true_shift():
    rng = np.random.default_rng(11)
    trials, covered, paired_wins = 200, 0, 0
    for trial in range(trials):
        base = synthetic(rng, 200)
        shifted = RowLosses(base.ids, base.tokens * (base.loss_mean - 0.05 + rng.normal(0, 0.1, 200)), base.tokens)
        difference = stats.compare(shifted, base, resamples=1000, seed=trial)
        covered += difference.loss.low <= -0.05 <= difference.loss.high
        paired_wins += difference.beats
    assert 0.91 <= covered / trials <= 0.985
    assert paired_wins / trials > 0.95
    # unpaired, the two models' own intervals overlap: the shift hides in the rows' spread
    a, b = stats.summarize(shifted, seed=0), stats.summarize(base, seed=0)
    assert a.loss.high > b.loss.low


def test_verdicts_and_seeded_groups():
    rng = np.random.default_rng(3)
    base = synthetic(rng, 100)
    same = stats.compare(base, base)
    assert same.loss == stats.Interval(0.0, 0.0, 0.0) and same.verdict == stats.WITHIN_NOISE and not same.beats
    worse = RowLosses(base.ids, base.loss_sum + 0.2 * base.tokens, base.tokens)
    found = stats.compare(worse, base)
    assert found.verdict == stats.WORSE and found.loss.estimate == pytest.approx(0.2)
    assert found.loss.low == pytest.approx(0.2) and found.row_mean_loss.estimate == pytest.approx(0.2)
    # a selector whose seeds disagree: resampling the seeds widens the interval of its difference
    seeds = [RowLosses(base.ids, base.loss_sum + d * base.tokens, base.tokens) for d in (-0.3, 0.1, 0.05)]
    spread = stats.compare(seeds, base)
    assert spread.loss.estimate == pytest.approx(np.mean([-0.3, 0.1, 0.05]))
    assert spread.verdict == stats.WITHIN_NOISE and spread.loss.high - spread.loss.low > 0.3
    assert stats.compare(seeds, base, seed=1) != spread and stats.compare(seeds, base) == spread


def test_runs_on_different_rows_are_not_compared():
    rng = np.random.default_rng(0)
    a, b = synthetic(rng, 20), synthetic(rng, 20, ids=[f"x{i}" for i in range(20)])
    with pytest.raises(BadInputError, match="missing ids"):
        stats.compare(a, b)
    swapped = RowLosses(a.ids[::-1], a.loss_sum[::-1], a.tokens[::-1])
    with pytest.raises(BadInputError, match="another order"):
        stats.compare(a, swapped)
    with pytest.raises(BadInputError, match="resamples"):
        stats.summarize(a, resamples=10)


# -- held-out split -----------------------------------------------------------------------------------------
def test_holdout_size_and_stability():
    ids = [f"id-{i}" for i in range(3000)]
    held = holdout.holdout_ids(ids, seed=0)
    assert len(held) == 300 and held == holdout.holdout_ids(ids[::-1], seed=0)  # 10%; order does not matter
    assert len(holdout.holdout_ids([f"id-{i}" for i in range(20_000)])) == 500
    assert len(holdout.holdout_ids(ids, rows=42)) == 42
    assert set(holdout.holdout_ids(ids, seed=1)) != set(held)
    assert len(holdout.holdout_ids(ids + ids[:100])) == 300  # a repeated id is one row
    # more rows, the same count: only rows displaced by new ones with a smaller hash leave the held-out set
    grown = ids + [f"new-{i}" for i in range(1000)]
    after = set(holdout.holdout_ids(grown, rows=300))
    newcomers = {i for i in after if i.startswith("new-")}
    assert set(held) - after == set(held[300 - len(newcomers):]) and after - newcomers <= set(held)
    assert 0 < len(newcomers) < 300
    for bad in (0, 3000, 5000):
        with pytest.raises(BadInputError, match="between 1 and 2999"):
            holdout.holdout_ids(ids, rows=bad)
    with pytest.raises(BadInputError, match="cannot be split"):
        holdout.holdout_ids(["only"])


def pool_table(pairs: list[tuple[str, str]]) -> pa.Table:
    return records_to_table(conversation([pair], i) for i, pair in enumerate(pairs))


def test_split_and_overlap_checks():
    pairs = [(f"Question {i}?", f"Answer {i}.") for i in range(60)]
    pool = pool_table(pairs + [("Question 7?", "Another answer."), ("  Question 9?\r\n", "Yet another.")])
    rest, held = holdout.split_holdout(pool, rows=10, seed=0)
    assert rest.num_rows + held.num_rows == pool.num_rows and held.num_rows == 10
    assert not set(rest.column("id").to_pylist()) & set(held.column("id").to_pylist())
    holdout.check_disjoint(held, pool_table([("Something else?", "Yes.")]), eval_name="held", pool_name="other")

    with pytest.raises(BadInputError) as info:
        holdout.check_disjoint(pool.slice(5, 3), pool, eval_name="gold.csv", pool_name="alpaca")
    assert (info.value.file, info.value.row, info.value.field) == ("gold.csv", 0, "id")
    assert all(i in str(info.value) for i in pool.slice(5, 3).column("id").to_pylist())

    repeats = pool_table([("Question 7?", "A third answer."), ("Unrelated?", "No.")])
    with pytest.raises(BadInputError) as info:
        holdout.check_disjoint(repeats, pool, eval_name="gold.csv", pool_name="alpaca")
    assert (info.value.row, info.value.field) == (0, "messages")
    assert f"{repeats.column('id')[0]} = pool {pool.column('id')[7]}" in str(info.value)

    # the pool loses the rows an evaluation row asks again (normalized text), each with a reason
    eval_rows = pool_table([("Question 9?", "Nine."), ("Question 7?", "Seven.")]).slice(0, 2)
    eval_rows = pa.concat_tables([eval_rows, pool.slice(3, 1)])
    kept, quarantine = holdout.remove_overlap(pool, {"gold": eval_rows})
    reasons = quarantine.column("reason").to_pylist()
    assert kept.num_rows + quarantine.num_rows == pool.num_rows
    assert reasons.count(holdout.SAME_USER_TURNS) == 4 and reasons.count(holdout.IN_EVAL_SET) == 1
    holdout.check_disjoint(eval_rows, kept, eval_name="gold", pool_name="pool")


def test_alpaca_holdout_and_the_gold_set_kept_apart_from_the_pool(shared_data):
    """On the real data: 500 held-out Alpaca rows; 170 of the 254 gold prompts are asked verbatim by Alpaca
    rows (with other answers), which leave the pool before any selector sees it."""
    import gzip
    import json

    from tasks.text import alpaca_user_content

    raw = json.loads(gzip.decompress((shared_data / "alpaca" / "alpaca_data_52k.json.gz").read_bytes()))
    pool = records_to_table(make_record(
        messages=[{"role": "user", "content": alpaca_user_content(r["instruction"].strip(), r["input"].strip())},
                  {"role": "assistant", "content": r["output"]}], system=None, uri="alpaca", fmt="alpaca", row=i)
        for i, r in enumerate(raw))
    rest, held = holdout.split_holdout(pool, seed=0)
    assert (held.num_rows, rest.num_rows) == (500, 51_502)
    gold = read_gold(shared_data / "car" / "APE_score_valid.csv")[0]
    with pytest.raises(BadInputError, match="170 of its 254 rows have the same user turns"):
        holdout.check_disjoint(gold, rest, eval_name="gold", pool_name="alpaca")
    kept, quarantine = holdout.remove_overlap(rest, {"alpaca_holdout": held, "gold": gold})
    assert kept.num_rows + quarantine.num_rows == rest.num_rows and quarantine.num_rows == 170
    assert set(quarantine.column("reason").to_pylist()) == {holdout.SAME_USER_TURNS}
    for name, table in (("alpaca_holdout", held), ("gold", gold)):
        holdout.check_disjoint(table, kept, eval_name=name, pool_name="alpaca")


# -- gold set ------------------------------------------------------------------------------------------------
def test_gold_set_from_cars_validation_revisions(shared_data, tiny_confident_lm):
    path = shared_data / "car" / "APE_score_valid.csv"
    table, quarantine, counts = read_gold(path)
    assert counts == {"pairs_read": 254, "rows": 254, "quarantined": 0} and quarantine.num_rows == 0
    with path.open(newline="", encoding="utf-8") as fh:
        source = list(csv.DictReader(fh))
    from tasks.iqs.revisions import normalize_whitespace
    from tasks.text import car_text

    records = table.to_pylist()
    assert len({r["id"] for r in records}) == 254
    exact = 0
    for record in records:  # each row is the revised (score 1) line, and gives back its CaR text
        line = source[record["source"]["row"]]
        assert line["score"] == "1" and record["source"]["format"] == "car_revised"
        text = car_text(record["messages"], record["meta"])
        assert normalize_whitespace(text) == normalize_whitespace(line["src"])
        exact += text == line["src"].strip()
    assert exact == 253  # one response starts with a newline, which the canonical record strips
    assert sum("\n\n" in r["messages"][0]["content"] for r in records) == 106  # rows with an Alpaca input
    assert [{k: m[k] for k in ("role", "content")} for m in records[0]["messages"]] == [
        {"role": "user", "content": "List four countries in Africa"},
        {"role": "assistant", "content": "Here are four countries in Africa: Egypt, South Africa, Nigeria, Morocco."}]

    from transformers import AutoTokenizer

    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    encoded = ConversationEncoder(AutoTokenizer.from_pretrained(tiny_confident_lm), get_template("chatml"),
                                  max_length=256).encode(table.slice(0, 12))
    assert encoded.table.num_rows + encoded.quarantine.num_rows == 12
    result = loss.score_table(encoded.table, tiny_confident_lm, source="gold")
    assert np.isfinite(result.loss_sum).all() and (result.tokens > 0).all()


def test_gold_rows_that_cannot_be_split_go_to_quarantine(tmp_path):
    rows = [("Instruction: Name a colour. Response: Red.", 0), ("Instruction: Name a colour. Response: Blue.", 1),
            ("Instruction: Add. Input: 2 and 3 Response: 5", 0),
            ("Instruction: Add. Input: 2 and 3 Response: The sum is 5.", 1),
            ("Instruction: Say hi. Response: hi", 0), ("Instruction: Say hi. Response: ", 1),
            ("Instruction: Read the Input: a Input: b Response: x", 0),
            ("Instruction: Read the Input: a Input: b Response: y", 1),
            ("Instruction: Name a colour. Response: Red", 0), ("Instruction: Name a colour. Response: Blue.", 1)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["src", "score"])
    writer.writerows(rows)
    path = tmp_path / "revisions.csv"
    path.write_text(buf.getvalue())
    table, quarantine, counts = read_gold(path)
    assert counts == {"pairs_read": 5, "rows": 2, "quarantined": 3}
    assert [r["messages"][0]["content"] for r in table.to_pylist()] == ["Name a colour.", "Add.\n\n2 and 3"]
    assert quarantine.select(["row", "reason"]).to_pylist() == [
        {"row": 5, "reason": "empty_response"}, {"row": 7, "reason": "ambiguous_labels"},
        {"row": 9, "reason": "duplicate"}]


# -- report --------------------------------------------------------------------------------------------------
def ablation_runs() -> list[EvalRun]:
    """Known effects on two sets: car 0.1 nats/token better than random, longest 0.1 worse, top_score alike."""
    rng = np.random.default_rng(5)

    def model(truth: RowLosses, shift: float) -> RowLosses:
        means = truth.loss_mean + shift + rng.normal(0, 0.05, len(truth))
        return RowLosses(truth.ids, truth.tokens * means, truth.tokens)

    runs = []
    for eval_set, n in (("alpaca_holdout", 150), ("gold", 80)):
        truth = synthetic(rng, n)
        runs.append(EvalRun("base", None, eval_set, model(truth, 0.8)))
        for seed in (0, 1):
            runs += [EvalRun("random", seed, eval_set, model(truth, 0.0)),
                     EvalRun("car", seed, eval_set, model(truth, -0.1 if eval_set == "alpaca_holdout" else 0.0)),
                     EvalRun("longest", seed, eval_set, model(truth, 0.1))]
    return runs


def test_ablation_report_pieces():
    runs = ablation_runs()
    summary = summarize_runs(runs, resamples=500)
    holdout_set = summary["eval_sets"][0]
    assert [m["model"] for m in holdout_set["models"]] == ["base", "random", "car", "longest"]
    car = holdout_set["models"][2]
    direct = stats.compare([r.losses for r in runs[:7] if r.model == "car"],
                           [r.losses for r in runs[:7] if r.model == "random"], resamples=500)
    assert car["vs_baseline"] == direct.as_dict() and direct.verdict == stats.BETTER
    assert [s["seed"] for s in car["per_seed"]] == [0, 1]

    table = markdown_table(summary)
    assert "### alpaca_holdout (150 rows," in table and "| model | seed 0 | seed 1 | mean loss [95%]" in table
    assert "| random | " in table and "| baseline |" in table and "| base | \u2013 | \u2013 | " in table

    sentence = verdict_sentence(summary)
    assert sentence.startswith("car beats random beyond noise on alpaca_holdout (\u0394 \u22120.")
    assert "and does not beat random beyond noise on gold (\u0394 " in sentence
    assert "longest is worse than random beyond noise on alpaca_holdout (\u0394 +0.1" in sentence
    assert "and on gold" in sentence and "base" not in sentence

    import matplotlib.image

    png = bar_chart_png(summary)
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 500 and image.shape[1] > 1000


def test_a_token_budget_arm_is_compared_with_random_and_a_learning_rate_with_random_at_it():
    gold = [r for r in ablation_runs() if r.eval_set == "gold"]
    renamed = {"car": "random@tokens=car", "longest": "car@lr=0.0001"}
    runs = gold + [EvalRun("random@lr=0.0001", r.seed, r.eval_set, r.losses) for r in gold if r.model == "random"]
    runs = [EvalRun(renamed.get(r.model, r.model), r.seed, r.eval_set, r.losses) for r in runs]
    models = {m["model"]: m for m in summarize_runs(runs, resamples=300)["eval_sets"][0]["models"]}
    token_matched = stats.compare([r.losses for r in runs if r.model == "random@tokens=car"],
                                  [r.losses for r in runs if r.model == "random"], resamples=300)
    assert models["random@tokens=car"]["vs_baseline"] == token_matched.as_dict()
    # longest's runs, 0.1 worse than random, against random@lr=0.0001 (random's losses): worse
    assert models["car@lr=0.0001"]["vs_baseline"]["verdict"] == stats.WORSE
    assert models["random"]["vs_baseline"] is None and models["random@lr=0.0001"]["vs_baseline"] is None


def test_report_says_when_nothing_beats_random_and_refuses_incomplete_results():
    runs = [r for r in ablation_runs() if r.eval_set == "gold" and r.model != "longest"]
    sentence = verdict_sentence(summarize_runs(runs, resamples=300))
    assert sentence.startswith("car does not beat random beyond noise on gold") and "beats" not in sentence
    with pytest.raises(BadInputError, match="baseline 'random'"):
        summarize_runs([r for r in runs if r.model != "random"])
    with pytest.raises(BadInputError, match="two results"):
        summarize_runs(runs + runs[:1])


# -- answers -------------------------------------------------------------------------------------------------
def test_answers_from_the_evaluated_model(tiny_confident_lm, adapter):
    from transformers import AutoTokenizer

    from tasks.generate import answer

    model = loss.load_for_eval(tiny_confident_lm, adapter)
    found = answer(model, AutoTokenizer.from_pretrained(tiny_confident_lm), ["What is the capital of France?"],
                   max_new_tokens=5)
    again = answer(model, AutoTokenizer.from_pretrained(tiny_confident_lm), ["What is the capital of France?"],
                   max_new_tokens=5)
    assert found[0]["answer"] == again[0]["answer"] and 0 < found[0]["new_tokens"] <= 5


# -- GPU ------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_bf16_losses_close_to_the_fp32_loop(tiny_confident_lm, adapter, tokenized):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    precision = loss.eval_precision()  # auto: bf16 on a GPU that has it
    model = loss.load_for_eval(tiny_confident_lm, adapter, precision)
    assert next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    result = loss.row_losses(model, scored_rows(tiny_confident_lm, tokenized, adapter), batch_size=4,
                             precision=precision)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_confident_lm), str(adapter)).eval()
    means, _ = plain_loop(reference, tokenized)
    assert np.abs(result.loss_mean - np.array(means)).max() < 0.05 * max(means)
