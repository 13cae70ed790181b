"""Dedup: built duplicates (exact, one word changed, reordered sentences, paraphrases on real MiniLM embeddings,
an evaluation question inside a training row), negatives that must survive, MedicationQA's answer groups,
which row stays, flag mode, the select helper, the report and bad input."""
import json

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import CONVERSATION_SCHEMA, make_record, records_to_table
from tasks.dedup import (
    KEPT_SCHEMA,
    REMOVED_SCHEMA,
    DedupConfig,
    deduplicate,
    eval_fingerprint,
    read_eval_sources,
    report_markdown,
    run_dedup,
    similarity_png,
)
from tasks.dedup.config import SemanticConfig
from tasks.dedup.groups import greedy_removal
from tasks.dedup.minhash import band_rows, candidate_probability, lsh_pairs, signatures
from tasks.dedup.semantic import semantic_pairs
from tasks.dedup.text import Ragged, normalized_text, pair_jaccard, windows, words
from tasks.errors import BadInputError
from tasks.select import first_of_each_group

SKY = ("The sky looks blue because molecules in the air scatter short blue wavelengths of sunlight much more than "
       "long red ones. This effect is called Rayleigh scattering. At sunrise and sunset the light travels through "
       "more air, so most blue light is scattered away before it reaches us. That is why the sky turns red and "
       "orange then. On the moon there is no air to scatter light, so its sky is black even during the day.")
PEPPERMINT = (  # one answer, 161 words, shared by four questions (as in MedicationQA's DrugQA sheet)
    "Peppermint oil is generally considered to be safe when used in the small amounts found in foods and in products "
    "such as mouthwash and toothpaste. Diluted peppermint oil can freshen breath and may reduce the growth of some "
    "bacteria in the mouth. However, the essential oil is highly concentrated and should never be swallowed "
    "undiluted, because large amounts can cause heartburn, nausea, vomiting and, rarely, kidney damage. Add only a "
    "drop or two of essential oil to a full cup of water or to an alcohol free mouthwash base, swish, and spit it "
    "out. Do not give peppermint oil preparations to infants or young children, since menthol can cause breathing "
    "problems in them. Stop using the mixture if you notice burning, mouth sores or an allergic reaction such as "
    "a rash or swelling. Ask your dentist or pharmacist before using peppermint oil if you are pregnant, "
    "breastfeeding, or taking medicines, because it can interact with some drugs metabolized by the liver.")
PEPPERMINT_QUESTIONS = ["Is it safe to add peppermint essential oil in mouth wash?",
                        "is it safe to add peppermint essential oil in mouthwash",
                        "is peppermint oil safe in mouth wash",
                        "Is peppermint oil safe in mouthwash?"]
RIDDLE = "A farmer has seventeen sheep and all but nine run away, so how many sheep does the farmer have left now?"


def rec(prompt, answer, row=0, uri="train.json"):
    return make_record(messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                       system=None, uri=uri, fmt="alpaca", row=row)


def table_of(pairs):
    return records_to_table([rec(p, a, i) for i, (p, a) in enumerate(pairs)])


def by_prompt(table):
    return {r["messages"][0]["content"]: r for r in table.to_pylist()}


NO_SEMANTIC = {"semantic": {"enabled": False}}


# -- the pieces -------------------------------------------------------------------------------------------
def test_normalization_and_windows():
    assert normalized_text("  Héllo, WORLD!  It's 2+2=4\n日本") == "héllo world its 2 2 4 日 本"
    w = words(["a b c d e", "", "x y", "A, b. C; d? E!"])
    assert w.lengths.tolist() == [5, 0, 2, 5]
    three = windows(w, 3)
    assert three.lengths.tolist() == [3, 0, 1, 3]
    assert three.values[:3].tolist() == three.values[-3:].tolist()  # same words after normalization
    # a row shorter than the window is one window of all its words, equal to that run inside a longer row
    assert windows(words(["x y"]), 5).values.tolist() == windows(words(["q x y"]), 2).values[1:].tolist()
    assert windows(w, 3, short_whole=False).lengths.tolist() == [3, 0, 0, 3]


def test_minhash_estimates_jaccard_and_lsh_finds_pairs_at_the_threshold():
    rng = np.random.default_rng(0)
    rows, exact = [], []
    for overlap in range(0, 300, 30):  # pairs of 300-element sets with a known Jaccard
        a = rng.integers(0, 2**62, 300, dtype=np.uint64)
        b = np.concatenate([a[overlap:], rng.integers(0, 2**62, overlap // 2, dtype=np.uint64)])
        rows += [a, b]
        exact.append(len(set(a.tolist()) & set(b.tolist())) / len(set(a.tolist()) | set(b.tolist())))
    ragged = Ragged(np.concatenate(rows), np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64))
    sig = signatures(ragged, 256)
    estimate = np.array([(sig[2 * i] == sig[2 * i + 1]).mean() for i in range(len(exact))])
    assert np.abs(estimate - np.array(exact)).max() < 0.06
    pairs = np.arange(len(rows)).reshape(-1, 2)
    assert np.allclose(pair_jaccard(ragged, pairs), exact)

    bands, r = band_rows(0.8, 128)
    assert bands * r <= 128 and candidate_probability(0.8, bands, r) >= 0.99
    # 100 pairs at Jaccard 0.8 (90 shared of 100 each: 90 / 110 = 0.818): nearly all become candidates
    sets = []
    for _ in range(100):
        shared = rng.integers(0, 2**62, 90, dtype=np.uint64)
        sets += [np.concatenate([shared, rng.integers(0, 2**62, 10, dtype=np.uint64)]),
                 np.concatenate([shared, rng.integers(0, 2**62, 10, dtype=np.uint64)])]
    ragged = Ragged(np.concatenate(sets), np.arange(0, 100 * len(sets) + 1, 100, dtype=np.int64))
    found = {tuple(p) for p in lsh_pairs(signatures(ragged, 128), bands, r).tolist()}
    assert sum((2 * i, 2 * i + 1) in found for i in range(100)) >= 97


def test_greedy_removal_points_to_a_kept_row():
    # 0~1, 1~2 (a chain), 3~4; rank: 1 best, then 0, 2, 3, 4
    pairs = np.array([[0, 1], [1, 2], [3, 4], [0, 2]])
    similarity = np.array([0.9, 0.85, 0.95, 0.81])
    rank = np.array([1, 0, 2, 3, 4])
    rows, kept, sims = greedy_removal(pairs, similarity, rank)
    assert dict(zip(rows.tolist(), kept.tolist())) == {0: 1, 2: 1, 4: 3}
    assert sims.tolist() == [0.9, 0.85, 0.95]


def test_first_of_each_group_keeps_the_best_row_of_each_group():
    groups = ["g1", None, "g1", "g2", None, "g2", "g1"]
    order = np.array([6, 5, 4, 3, 2, 1, 0])  # priority: row 6 best
    assert first_of_each_group(order, groups).tolist() == [6, 5, 4, 1]
    assert first_of_each_group(np.arange(3), [None, None, None]).tolist() == [0, 1, 2]


# -- near-duplicates and negatives ----------------------------------------------------------------------
def test_near_duplicates_exact_one_word_reordered_and_negatives_survive():
    sentences = SKY.split(". ")
    reordered = ". ".join(sentences[2:] + sentences[:2])
    rows = [
        ("Explain why the sky is blue.", SKY),
        ("explain why the SKY is blue", SKY.replace(".", " .").upper()),  # exact after normalization
        ("Explain why the sky is blue!", SKY.replace("much more", "far more")),  # one word changed
        ("Explain why the sky is blue...", reordered),  # sentences reordered
        # same instruction, different inputs (and the same short answer): all stay
        ("Classify the sentiment of this sentence.\n\nI love this movie.", "Positive"),
        ("Classify the sentiment of this sentence.\n\nThe food was great.", "Positive"),
        ("Classify the sentiment of this sentence.\n\nI hated the service.", "Negative"),
        ("Translate to French.\n\nGood morning, how are you today?", "Bonjour, comment allez-vous aujourd'hui ?"),
        ("Translate to French.\n\nGood evening, how are you tonight?", "Bonsoir, comment allez-vous ce soir ?"),
    ]
    table = table_of(rows)
    scores = pa.table({"id": table.column("id"), "iqs_score": [1.0] + [0.0] * (len(rows) - 1)})
    result = deduplicate(table, DedupConfig(**NO_SEMANTIC), scores=scores)
    removed = by_prompt(result.removed)
    kept_id = by_prompt(result.table)["Explain why the sky is blue."]["id"]
    assert set(removed) == {"explain why the SKY is blue", "Explain why the sky is blue!",
                            "Explain why the sky is blue..."}
    for row in removed.values():
        assert row["reason"] == "near_duplicate" and row["kept_id"] == kept_id and row["similarity"] >= 0.8
    assert removed["explain why the SKY is blue"]["similarity"] == 1.0
    assert result.stats["removed"] == {"near_duplicate": 3, "semantic_duplicate": 0, "contaminated": 0}
    assert result.stats["rows"] == result.stats["kept"] + 3 == result.table.num_rows + result.removed.num_rows
    assert result.table.schema == KEPT_SCHEMA and result.removed.schema == REMOVED_SCHEMA
    assert result.table.column("answer_group").null_count == result.table.num_rows


def test_which_row_stays_score_then_longest_answer_then_id():
    rows = [("Explain why the sky is blue.", SKY), ("Explain why the sky is blue.!", SKY + " Really.")]
    table = table_of(rows)
    ids = table.column("id").to_pylist()
    unscored = deduplicate(table, DedupConfig(**NO_SEMANTIC))
    assert unscored.table.column("id").to_pylist() == [ids[1]]  # the longer answer
    scores = pa.table({"id": ids, "iqs_score": [0.9, 0.1]})
    scored = deduplicate(table, DedupConfig(**NO_SEMANTIC), scores=scores)
    assert scored.table.column("id").to_pylist() == [ids[0]] and scored.removed.column("kept_id")[0].as_py() == ids[0]
    tied = deduplicate(table, DedupConfig(**NO_SEMANTIC), scores=pa.table({"id": ids, "iqs_score": [0.5, 0.5]}))
    assert tied.table.column("id").to_pylist() == [min(ids)]


def test_flag_mode_keeps_every_row_with_the_decision_columns():
    rows = [("Explain why the sky is blue.", SKY), ("explain why the sky is blue", SKY), ("Say hi.", "Hi!")]
    result = deduplicate(table_of(rows), DedupConfig(mode="flag", **NO_SEMANTIC))
    assert result.table.num_rows == 3 and result.removed.num_rows == 0
    assert result.table.schema.names == CONVERSATION_SCHEMA.names + ["reason", "kept_id", "similarity",
                                                                     "eval_source", "answer_group"]
    assert result.table.column("reason").to_pylist().count("near_duplicate") == 1
    assert result.table.column("reason").null_count == 2
    assert result.stats["kept"] == 2 and result.stats["removed"]["near_duplicate"] == 1


# -- answer groups: MedicationQA ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    from tasks.embed import load_model

    return load_model(None, "cpu")


def embeddings_of(table, model):
    from tasks.embed import embeddings_table, encode_features, table_texts

    return embeddings_table(table.column("id").to_pylist(), encode_features(model, table_texts(table, "car"), 16))


@pytest.mark.slow
def test_medicationqa_peppermint_questions_are_one_answer_group(minilm):
    rows = [(q, PEPPERMINT) for q in PEPPERMINT_QUESTIONS] + [
        ("How should I store insulin?", "Keep unopened insulin in the refrigerator and the pen in use at room "
                                        "temperature for up to 28 days, away from heat and light.")]
    assert len(PEPPERMINT.split()) == 161
    table = table_of(rows)
    result = deduplicate(table, DedupConfig(), embeddings=embeddings_of(table, minilm))
    assert result.removed.num_rows == 0  # nothing removed: different questions, one answer
    groups = {r["messages"][0]["content"]: r["answer_group"] for r in result.table.to_pylist()}
    assert len({groups[q] for q in PEPPERMINT_QUESTIONS}) == 1 and groups[PEPPERMINT_QUESTIONS[0]] is not None
    assert groups["How should I store insulin?"] is None
    assert result.stats["answer_groups"] == 1 and result.stats["rows_in_answer_groups"] == 4
    # the semantic rule saw them as duplicates and left them to the group
    assert result.stats["rules"]["semantic_duplicate"]["answer_pairs_left_to_groups"] >= 1
    # select's helper then takes one of the four: the group's first row by priority
    order = np.argsort(-np.array([len(r["messages"][0]["content"]) for r in result.table.to_pylist()]))
    chosen = first_of_each_group(order, result.table.column("answer_group").to_pylist())
    assert len(chosen) == 2


# -- semantic duplicates ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_paraphrases_are_semantic_duplicates_and_different_inputs_survive(minilm):
    rows = [
        ("Give three tips for staying healthy.", "Eat a balanced diet with plenty of fruits and vegetables, exercise "
                                                 "regularly, and get enough sleep every night."),
        ("Share three tips for keeping healthy.", "Eat a balanced diet rich in fruits and vegetables, exercise "
                                                  "regularly, and sleep enough every night."),
        ("Classify the sentiment of this sentence.\n\nI love this movie.", "Positive"),
        ("Classify the sentiment of this sentence.\n\nThe food was great.", "Positive"),
        ("Classify the sentiment of this sentence.\n\nI hated the service.", "Negative"),
        ("Describe the water cycle.", "Water evaporates from oceans and lakes, condenses into clouds, and falls "
                                      "back to the ground as rain or snow."),
    ]
    table = table_of(rows)
    result = deduplicate(table, DedupConfig(), embeddings=embeddings_of(table, minilm))
    removed = by_prompt(result.removed)
    assert list(removed) == ["Share three tips for keeping healthy."]  # the shorter answer goes
    row = removed["Share three tips for keeping healthy."]
    assert row["reason"] == "semantic_duplicate" and row["similarity"] >= 0.95
    assert row["kept_id"] == by_prompt(result.table)["Give three tips for staying healthy."]["id"]
    # the shingles alone would not call them duplicates
    assert result.stats["removed"]["near_duplicate"] == 0
    assert result.stats["rules"]["semantic_duplicate"]["index"] == "flat (exact)"


def test_ivf_search_and_rows_with_many_duplicates():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x[100:130] = x[99] + rng.normal(scale=0.01, size=(30, 32))  # 31 near-copies: more than `neighbors`
    x[2000] = x[1000] + rng.normal(scale=0.01, size=32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    config = SemanticConfig(threshold=0.95, nlist=16, nprobe=4, neighbors=8)
    eligible = np.ones(len(x), dtype=bool)
    eligible[2000] = False  # rows removed by an earlier rule are not searched
    pairs, stats, nearest = semantic_pairs(x, config, eligible, "cpu")
    exact = {(i, j) for i, j in zip(*np.nonzero(np.triu(x @ x.T, 1) >= 0.95)) if eligible[i] and eligible[j]}
    assert {tuple(p) for p in pairs.pairs.tolist()} == exact and len(exact) == 31 * 30 // 2
    assert stats["index"] == "IVF16 nprobe 4" and stats["saturated_rows"] == 31
    assert np.isnan(nearest[2000]) and nearest[99] >= 0.95 and np.nanmax(nearest[300:]) < 0.95
    import faiss

    if faiss.get_num_gpus() == 0:
        with pytest.raises(BadInputError, match="dedup.device is gpu"):
            semantic_pairs(x, config, eligible, "gpu")


# -- contamination -----------------------------------------------------------------------------------------
def test_eval_question_inside_a_training_row_is_contaminated(tmp_path):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": RIDDLE, "input": "", "output": "Nine."},
        {"instruction": "What is the boiling point of water?", "input": "", "output": "100 degrees Celsius."},
        {"instruction": "Hi there", "input": "", "output": "Hello."},  # too short to match as a whole
    ]) + "\n")
    rows = [
        ("Here is a riddle for you. " + RIDDLE + " Explain your reasoning step by step.", "The farmer has nine."),
        ("Tell me: what is the BOILING point of water? Answer in Celsius.", "It boils at 100 degrees."),
        ("What is the boiling point of ethanol?", "About 78 degrees Celsius."),  # a different question
        ("Hi there, can you help me?", "Sure."),
        ("A farmer has seventeen sheep.", "That is a lot of sheep."),  # a part of the riddle, under 13 words
    ]
    config = DedupConfig(decontaminate=[str(eval_file)], **NO_SEMANTIC)
    evals, _ = read_eval_sources(config.decontaminate)
    out = run_dedup(table_of(rows), config)  # what the stage publishes
    removed = by_prompt(out.companions["removed"])
    assert set(removed) == {rows[0][0], rows[1][0]}
    riddle = removed[rows[0][0]]
    assert riddle["reason"] == "contaminated" and riddle["similarity"] == 1.0
    assert riddle["kept_id"] == evals.ids[0] and riddle["eval_source"] == f"{eval_file}#0"
    assert removed[rows[1][0]]["kept_id"] == evals.ids[1]
    stats = json.loads(json.dumps(out.stats))  # plain JSON, as `sftflow stage dedup --json` shows it
    assert stats["eval_sources"][0]["read"] == stats["eval_sources"][0]["kept"] == 3
    assert stats["rules"]["contaminated"]["eval_prompts_too_short"] == 1
    assert stats["removed"] == {"near_duplicate": 0, "semantic_duplicate": 0, "contaminated": 2}
    assert stats["kept"] == out.table.num_rows == 3
    assert "### Contaminated" in out.report and out.files["similarity.png"][:4] == b"\x89PNG"
    # the evaluation file's content is part of the stage key
    before = eval_fingerprint(config.decontaminate)
    eval_file.write_text(eval_file.read_text() + json.dumps({"instruction": "New question here", "output": "x"}))
    assert eval_fingerprint(config.decontaminate) != before


def test_a_missing_eval_file_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="missing.jsonl"):
        read_eval_sources(DedupConfig(decontaminate=[str(tmp_path / "missing.jsonl")]).decontaminate)


# -- report and bad input -----------------------------------------------------------------------------------
def test_report_shows_groups_side_by_side_and_a_histogram():
    rows = [("Explain why the sky is blue.", SKY), ("explain why the sky is blue", SKY)] + [
        (q, PEPPERMINT) for q in PEPPERMINT_QUESTIONS[:2]]
    config = DedupConfig(**NO_SEMANTIC)
    result = deduplicate(table_of(rows), config)
    png = similarity_png(result, config)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = report_markdown(result, examples=3)
    assert "| removed: near_duplicate | 1 |" in text and "in 4 = kept 3 + removed 1" in text
    assert "### Near-duplicates" in text and "| kept | removed | similarity |" in text
    assert "### Answer groups" in text


def test_bad_input_is_named():
    table = table_of([("Say hi.", "Hi!"), ("Say bye.", "Bye!")])
    with pytest.raises(BadInputError, match="embeddings"):
        deduplicate(table, DedupConfig())
    with pytest.raises(BadInputError, match="no IQS score") as err:
        deduplicate(table, DedupConfig(**NO_SEMANTIC), scores=pa.table({"id": ["x"], "iqs_score": [1.0]}))
    assert err.value.field == "iqs_score"
    short = pa.table({"id": table.column("id"), "embedding": pa.array([[1.0, 0.0], [1.0]], pa.list_(pa.float32()))})
    with pytest.raises(BadInputError, match="embedding has 1 values"):
        deduplicate(table, DedupConfig(), embeddings=short)
    with pytest.raises(ValueError):
        DedupConfig(near={"threshold": 1.5})
    empty = deduplicate(records_to_table([]), DedupConfig())
    assert empty.table.num_rows == 0 and empty.stats["kept"] == 0
