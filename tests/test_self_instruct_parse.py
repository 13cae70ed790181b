"""Prompt building, parsing of real-looking model output, Alpaca's filters, and exact ROUGE-L de-duplication."""
from __future__ import annotations

import random

import pytest

from tasks.errors import BadInputError
from tasks.self_instruct.parse import filter_reason, parse_response
from tasks.self_instruct.prompt import Task, encode_prompt, load_seed_tasks
from tasks.self_instruct.rouge import RougeDeduplicator

# What a GPT model continues after a prompt ending in "4. Instruction:" (3 prompt tasks).
GPT_OUTPUT = """ Rewrite the following sentence in the passive voice.
4. Input:
The committee approved the new budget on Tuesday.
4. Output:
The new budget was approved by the committee on Tuesday.
###
5. Instruction: What are the main differences between a crocodile and an alligator?
5. Input:
<noinput>
5. Output:
Alligators have a wide, U-shaped snout, while crocodiles have a narrower, V-shaped one. Crocodiles also show \
their lower teeth when their mouths are closed.
###
6. Instruction: Draw a picture of a cat sitting on a windowsill at sunset.
6. Input:
<noinput>
6. Output:
(An illustration of a cat.)
###
7. Instruction: Sort these.
7. Input:
3, 1, 2
7. Output:
1, 2, 3
###
8. Instruction: Write a program that prints the first ten prime numbers.
8. Input:
<noinput>
8. Output:
for n in range(2, 30): print(n)
###
9. Instruction: "Explain why the sky looks blue during the day."
9. Input:
<noinput>
9. Output:
Sunlight is scattered by air molecules, and blue light is scattered the most.
###
10. Instruction: Écrivez un court poème sur la mer et le vent.
10. Input:
<noinput>
10. Output:
La mer chante, le vent danse.
###
11. Instruction: Classify the following animals as mammals or reptiles.
11. Input:
Dolphin, iguana, bat, python
###
12. Instruction: Suggest three names for a bakery that specializes in sourdough bread.
12. Input:
<noinput>
12. Output:
1. Rise & Crust
2. The Wild Yeast
3. Sourdough Social
###
13. Instruction: Summarize the main idea of the following paragraph in one sentence.
13. Input:
Remote work has become common since 2020. Companies report lower office costs, while employees value the \
flexibility but sometimes miss
"""


def test_encode_prompt_matches_alpaca_layout():
    tasks = [Task("Give me a list of:  ", "", "apples, pears"), Task("Translate  this\nsentence", "Hola", "Hello")]
    assert encode_prompt("REQUIREMENTS", tasks) == (
        "REQUIREMENTS\n###\n1. Instruction: Give me a list of\n1. Input:\n<noinput>\n1. Output:\napples, pears\n"
        "###\n2. Instruction: Translate this sentence\n2. Input:\nHola\n2. Output:\nHello\n###\n3. Instruction:")


def test_prompt_from_real_seed_tasks(shared_data):
    seeds = load_seed_tasks(str(shared_data / "alpaca" / "seed_tasks.jsonl"))
    assert len(seeds) == 175 and seeds[1].id == "seed_task_1"
    requirements = (shared_data / "alpaca" / "prompt.txt").read_text()
    prompt = encode_prompt(requirements, seeds[:3])
    assert prompt.startswith(requirements + "\n###\n1. Instruction: Is there anything I can eat")
    assert "2. Input:\nNight : Day :: Right : Left\n" in prompt and "1. Input:\n<noinput>\n" in prompt
    assert prompt.endswith("###\n4. Instruction:")


def test_bad_seed_file_names_row_and_field(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"id": "a", "instruction": "Say hi to me.", "instances": [{"input": "", "output": "hi"}]}\n'
                    '{"id": "b", "instruction": "Add the numbers.", "instances": []}\n')
    with pytest.raises(BadInputError, match=r"seeds.jsonl, row 2, field 'instances'"):
        load_seed_tasks(str(path))


def test_parse_realistic_gpt_output_with_reasons():
    tasks, drops = parse_response(GPT_OUTPUT, 3, "length")
    assert [t.instruction for t in tasks] == [
        "Rewrite the following sentence in the passive voice.",
        "What are the main differences between a crocodile and an alligator?",
        "Suggest three names for a bakery that specializes in sourdough bread."]
    assert tasks[0].input == "The committee approved the new budget on Tuesday."
    assert tasks[1].input == "" and tasks[1].output.endswith("mouths are closed.")
    assert tasks[2].output == "1. Rise & Crust\n2. The Wild Yeast\n3. Sourdough Social"
    assert [d.reason for d in drops] == ["blacklist", "too_short", "write_a_program", "starts_with_punctuation",
                                         "non_english_start", "malformed", "truncated"]
    assert drops[-1].text.startswith("13. Instruction: Summarize")


def test_last_task_kept_when_generation_stopped_normally():
    tasks, drops = parse_response(GPT_OUTPUT + "13. Output:\nRemote work trades office costs for flexibility.\n###\n",
                                  3, "stop")
    assert tasks[-1].instruction.startswith("Summarize the main idea")
    assert tasks[-1].output == "Remote work trades office costs for flexibility."
    assert "truncated" not in [d.reason for d in drops]


def test_chat_model_that_repeats_the_header_and_skips_separators():
    text = ("4. Instruction: Name the largest planet in our solar system.\n4. Input:\n<noinput>\n4. Output:\n"
            "Jupiter.\n\n5. Instruction: Convert the following temperature from Celsius to Fahrenheit.\n5. Input:\n"
            "25 degrees Celsius\n5. Output:\n77 degrees Fahrenheit.")
    tasks, drops = parse_response(text, 3, "stop")
    assert [(t.instruction, t.input, t.output) for t in tasks] == [
        ("Name the largest planet in our solar system.", "", "Jupiter."),
        ("Convert the following temperature from Celsius to Fahrenheit.", "25 degrees Celsius",
         "77 degrees Fahrenheit.")]
    assert drops == []


def test_refusal_is_one_malformed_drop():
    tasks, drops = parse_response("I'm sorry, but I can't help with generating that list.", 3, "stop")
    assert tasks == [] and [d.reason for d in drops] == ["malformed"]


@pytest.mark.parametrize("instruction, reason", [
    ("Plot the population of France over time.", "blacklist"),
    ("Please go to the store and buy milk for me.", "blacklist"),
    ("Create a flowchart for this process.", "blacklist"),
    ("Summarize the files in this folder please.", "blacklist"),
    ("Describe a mapping between two sets in maths.", None),  # "map" only as a whole word
    ("Explain what a graphical user interface is.", None),
    ("Is this a word?", None),
    ("Hi there you", "too_short"),
    (" ".join(["word"] * 151), "too_long"),
    ("¿Qué hora es en Madrid ahora?", "non_english_start"),
    ("- List three colors of the rainbow.", "starts_with_punctuation"),
])
def test_filters(instruction, reason):
    assert filter_reason(instruction) == reason


def reference_dedup(pool: list[str], candidates: list[str], threshold: float = 0.7) -> list[tuple[bool, float]]:
    """Alpaca's loop with rouge_score itself (without the process pool)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tokens = [scorer._tokenizer.tokenize(t) for t in pool]
    out = []
    for text in candidates:
        new = scorer._tokenizer.tokenize(text)
        best = max(rouge_scorer._score_lcs(new, t).fmeasure for t in tokens)
        out.append((best <= threshold, best))
        if best <= threshold:
            tokens.append(new)
    return out


def test_dedup_equals_rouge_score_on_mutated_seed_instructions(shared_data):
    seeds = [t.instruction for t in load_seed_tasks(str(shared_data / "alpaca" / "seed_tasks.jsonl"))]
    rng = random.Random(7)
    vocab = " ".join(seeds).split()
    candidates = []
    for _ in range(150):
        words = rng.choice(seeds).split()
        for _ in range(rng.randint(0, 6)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        candidates.append(" ".join(words))
    candidates += ["¿¿??", "", "a b c d e f g h i j", "a b c d e f g x y z"]  # no tokens; F1 exactly at 0.7
    ours = RougeDeduplicator(seeds, block=64).add(candidates)
    expected = reference_dedup(seeds, candidates)
    assert [(v.kept, v.max_rouge_l) for v in ours] == expected
    assert 0 < sum(v.kept for v in ours) < len(candidates)


def test_dedup_within_one_block_and_names_the_similar_instruction():
    dedup = RougeDeduplicator(["Give three tips for staying healthy."])
    verdicts = dedup.add(["Write a haiku about autumn leaves falling.",
                          "Write a haiku about the autumn leaves falling.",
                          "Give me three tips for staying healthy."])
    assert [v.kept for v in verdicts] == [True, False, False]
    assert verdicts[1].most_similar == "Write a haiku about autumn leaves falling."
    assert verdicts[2].most_similar == "Give three tips for staying healthy."
    assert len(dedup) == 2


@pytest.mark.parametrize("text", [
    "Rewrite the sentence: \"It's 5pm—time to go!\"", "Ünïcödé İstanbul ﬁle KELVIN K straße ½ ２０２４",
    "e-mail, C++ & naïve café; x_y z\t\nnew", "", "   ", "日本語のテキスト and English", "ΣΊΣΥΦΟΣ σίσυφος"])
def test_tokens_equal_rouge_score_default_tokenizer(text):
    from rouge_score.tokenizers import DefaultTokenizer

    from tasks.self_instruct.rouge import rouge_tokens

    assert rouge_tokens(text) == DefaultTokenizer(use_stemmer=False).tokenize(text)
