"""ROUGE-L de-duplication as in self-instruct: 10,000 candidate instructions, decided one after another against
10,000 existing ones plus every candidate kept before them (drop when ROUGE-L F1 > 0.7).

ours: `tasks.self_instruct.rouge.RougeDeduplicator` (tokenize once, rapidfuzz bit-parallel LCS over blocks, all
cores). Baselines, rouge_score's own `_score_lcs` on rouge_score's tokens:
- alpaca_pool: Alpaca's loop, a fresh `multiprocessing.Pool(cpu_count)` per candidate mapping `_score_lcs` over
  every instruction so far; measured on the first --pool-candidates candidates, in order.
- rouge_score_loop: the same loop in one process; measured on --loop-candidates candidates spread over the whole
  run, each scored against the pool it had in the sequential run (our kept set before it, which the first
  baseline checks is the same as the reference's).
The baselines are too slow to run in full here (about an hour on 2 cores), so their full-run time is
EXTRAPOLATED linearly in the number of (candidate, instruction) pairs; both check that their keep/drop
decisions and best scores equal ours on every candidate they measured.
"""
from __future__ import annotations

import os
import random
import time
from functools import partial
from typing import Any

from benchmarks.common import isolated

# Short fixed parts, compositional slots ("coastal farming", "planning ancient festivals"): like generated
# instructions, most share a frame with many others but differ in what they are about.
TEMPLATES = [
    "Write a {length} {genre} about {topic} for {audience}.",
    "Explain how {topic} affects {topic2}.",
    "Summarize this {doc} about {topic} in {n} sentences.",
    "Give {n} tips for {activity} {context}.",
    "What are the main differences between {topic} and {topic2}?",
    "Classify these {items} from {topic} as {cat} or {cat2}.",
    "Rewrite this {doc} about {topic} to sound more {tone}.",
    "Suggest {n} names for a {business} that specializes in {topic}.",
    "Translate this {doc} about {topic} into {language}.",
    "Generate {n} questions to ask {person} about {topic}.",
    "Identify the {feature} in this {doc} on {topic}.",
    "Compose a {tone} email to {person} about {activity}.",
    "How can I get better at {activity} {context}?",
    "Create a {duration} plan for {activity}.",
    "Describe the process of {activity} step by step.",
    "Compare {topic} and {topic2} in terms of {aspect}.",
    "Is it better to start {activity} {context} or wait?",
    "Provide an example of {topic} in everyday life.",
    "Find the {feature} in this {doc} and explain why it matters for {topic}.",
    "Is this statement about {topic} true or false?",
    "Come up with a slogan for a {business} that sells {topic} gear.",
    "List {n} common mistakes people make when {activity}.",
    "Why do {audience} care about {topic}?",
    "Recommend {n} books on {topic} for {audience}.",
    "Outline a lesson on {topic} for {audience}.",
    "Predict how {topic} will change by {year}.",
    "Debate the pros and cons of {activity}.",
    "Draft a {tone} tweet announcing {topic} news.",
    "Estimate the cost of {activity} {context}.",
    "Who should I contact about {activity} {context}?",
]
SLOTS = {
    "length": ["short", "two-paragraph", "one-sentence", "100-word", "brief", "detailed"],
    "genre": ["poem", "story", "limerick", "dialogue", "speech", "product description", "news report", "haiku"],
    "topic": ["climate change", "machine learning", "the French Revolution", "photosynthesis", "inflation",
              "social media", "remote work", "the water cycle", "black holes", "renewable energy"],
    "audience": ["children", "retired teachers", "software engineers", "first-year students", "tourists",
                 "new parents", "nurses", "small business owners", "farmers", "teenagers"],
    "doc": ["paragraph", "news article", "product review", "email", "tweet", "cover letter", "recipe", "poem",
            "meeting summary", "complaint", "abstract", "blog post"],
    "n": ["two", "three", "four", "five", "six", "seven", "ten", "twelve"],
    "context": ["on a tight budget", "while traveling abroad", "at home", "during winter", "with little time",
                "as a beginner", "in a small apartment", "with young kids", "after work", "in a new city"],
    "items": ["examples", "facts", "claims", "terms", "sentences", "events", "products", "quotes"],
    "cat": ["positive", "formal", "primary", "renewable", "indoor", "fiction", "urgent", "local"],
    "cat2": ["negative", "informal", "secondary", "non-renewable", "outdoor", "non-fiction", "routine", "foreign"],
    "tone": ["polite", "formal", "friendly", "persuasive", "humorous", "concise", "professional", "enthusiastic"],
    "business": ["bakery", "bookshop", "coffee shop", "repair shop", "yoga studio", "pet store", "law firm",
                 "food truck", "flower shop", "startup"],
    "language": ["French", "Spanish", "German", "Japanese", "Italian", "Portuguese", "Korean", "Dutch"],
    "person": ["a doctor", "my landlord", "a new colleague", "the hiring manager", "a historian", "my neighbor",
               "a pilot", "the principal"],
    "feature": ["main argument", "grammatical errors", "tone", "named entities", "logical fallacy", "key dates",
                "metaphors", "assumptions"],
    "duration": ["one-week", "30-day", "three-month", "weekend", "six-week", "year-long"],
    "aspect": ["cost", "safety", "speed", "environmental impact", "ease of use", "history", "popularity"],
    "year": ["2030", "2040", "2050", "the end of the decade", "next summer"],
}
GERUNDS = ["studying", "planning", "photographing", "funding", "teaching", "documenting", "reviewing", "visiting",
           "organizing", "mapping out", "writing about", "investing in", "restoring", "promoting", "researching"]
TOPIC_ADJECTIVES = ["ancient", "modern", "urban", "rural", "digital", "tropical", "medieval", "sustainable",
                    "quantum", "local", "global", "coastal", "arctic", "industrial", "everyday", "hidden",
                    "competitive", "amateur", "professional", "seasonal", "organic", "electric", "Japanese",
                    "African", "underground"]
TOPIC_NOUNS = ["farming", "architecture", "music", "medicine", "poetry", "banking", "fashion", "cooking",
               "transport", "forests", "elections", "bridges", "libraries", "festivals", "robots", "markets",
               "rivers", "schools", "sports", "languages", "museums", "satellites", "diets", "mythology",
               "tourism", "insects", "weddings", "newspapers", "pharmacies", "deserts", "trains", "volcanoes",
               "gardens", "startups", "prisons", "theaters", "fisheries", "vaccines", "comics", "castles"]
PREFIXES = ["Please ", "Briefly, ", "In your own words, ", "For a school project, "]
SUFFIXES = [" Keep it under 100 words.", " Use bullet points.", " Be specific.", " Cite one example.",
            " Avoid jargon.", " Add a short conclusion.", " Number each point.", " Mention one surprising fact."]


LINKS = ["in", "for", "and", "versus", "among", "without", "near", "through"]


def _topic(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(SLOTS["topic"])
    topic = f"{rng.choice(TOPIC_ADJECTIVES)} {rng.choice(TOPIC_NOUNS)}"
    if rng.random() < 0.6:
        topic += f" {rng.choice(LINKS)} {rng.choice(TOPIC_ADJECTIVES).lower()} {rng.choice(TOPIC_NOUNS)}"
    return topic


def instructions(count: int, seed: int) -> list[str]:
    """Varied, instruction-like texts composed from templates (deterministic for a seed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        slots = {name: rng.choice(values) for name, values in SLOTS.items()}
        slots.update(topic=_topic(rng), topic2=_topic(rng), activity=f"{rng.choice(GERUNDS)} {_topic(rng)}")
        text = rng.choice(TEMPLATES).format(**slots)
        if rng.random() < 0.15:
            prefix = rng.choice(PREFIXES)
            text = prefix + text[0].lower() + text[1:]
        if rng.random() < 0.15:
            text += rng.choice(SUFFIXES)
        out.append(text)
    return out


def run_ours(existing: list[str], candidates: list[str]) -> list[tuple[bool, float]]:
    from tasks.self_instruct.rouge import RougeDeduplicator

    return [(v.kept, v.max_rouge_l) for v in RougeDeduplicator(existing).add(candidates)]


def _tokenize(texts: list[str]) -> list[list[str]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer._tokenizer.tokenize(t) for t in texts]


def run_alpaca_pool(existing: list[str], candidates: list[str]) -> tuple[list[tuple[bool, float]], float]:
    """stanford_alpaca generate_instruction.py, the de-duplication part; also returns its tokenizing seconds."""
    from multiprocessing import Pool

    from rouge_score import rouge_scorer

    began = time.perf_counter()
    all_tokens, candidate_tokens = _tokenize(existing), _tokenize(candidates)
    setup_s = time.perf_counter() - began
    decisions = []
    for new_tokens in candidate_tokens:
        with Pool(os.cpu_count()) as p:
            scores = p.map(partial(rouge_scorer._score_lcs, new_tokens), all_tokens)
        best = max(s.fmeasure for s in scores)
        decisions.append((best <= 0.7, best))
        if best <= 0.7:
            all_tokens.append(new_tokens)
    return decisions, setup_s


def run_loop_at(existing: list[str], candidates: list[str], kept: list[bool], picks: list[int]
                ) -> tuple[list[tuple[bool, float]], float]:
    """The single-process rouge_score loop for candidate j of `picks`, against its sequential pool."""
    from rouge_score import rouge_scorer

    began = time.perf_counter()
    existing_tokens, candidate_tokens = _tokenize(existing), _tokenize(candidates)
    setup_s = time.perf_counter() - began
    decisions = []
    for j in picks:
        pool = existing_tokens + [candidate_tokens[i] for i in range(j) if kept[i]]
        best = max(rouge_scorer._score_lcs(candidate_tokens[j], t).fmeasure for t in pool)
        decisions.append((best <= 0.7, best))
    return decisions, setup_s


def extrapolate(measured_s: float, setup_s: float, measured_pairs: int, total_pairs: int) -> float:
    """Tokenizing is paid once; the scoring time grows with the number of pairs."""
    return setup_s + (measured_s - setup_s) * total_pairs / measured_pairs


def add_arguments(parser: Any) -> None:
    parser.add_argument("--existing", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--pool-candidates", type=int, default=10, help="candidates the Alpaca pool loop runs")
    parser.add_argument("--loop-candidates", type=int, default=100, help="candidates the plain loop runs")


def run(args: Any) -> dict[str, Any]:
    texts = instructions(args.existing + args.candidates, seed=0)
    existing, candidates = texts[:args.existing], texts[args.existing:]
    ours_s, ours_mb, ours = isolated(run_ours, existing, candidates)
    kept = [k for k, _ in ours]
    pool_sizes = [args.existing + sum(kept[:j]) for j in range(len(candidates))]  # pairs per candidate
    total_pairs = sum(pool_sizes)

    comparisons = []
    k = min(args.pool_candidates, len(candidates))
    pool_s, pool_mb, (alpaca, pool_setup_s) = isolated(run_alpaca_pool, existing, candidates[:k])
    pool_full_s = extrapolate(pool_s, pool_setup_s, sum(pool_sizes[:k]), total_pairs)
    comparisons.append({"name": "vs alpaca_pool (extrapolated)", "ours_s": round(ours_s, 2),
                        "baseline_s": round(pool_full_s, 1), "measured_candidates": k,
                        "measured_s": round(pool_s, 1), "same_results": alpaca == ours[:k],
                        "ours_peak_mb": round(ours_mb), "baseline_peak_mb": round(pool_mb)})

    rng = random.Random(1)
    picks = sorted(rng.sample(range(len(candidates)), min(args.loop_candidates, len(candidates))))
    loop_s, loop_mb, (loop, loop_setup_s) = isolated(run_loop_at, existing, candidates, kept, picks)
    loop_full_s = extrapolate(loop_s, loop_setup_s, sum(pool_sizes[j] for j in picks), total_pairs)
    comparisons.append({"name": "vs rouge_score_loop (extrapolated)", "ours_s": round(ours_s, 2),
                        "baseline_s": round(loop_full_s, 1), "measured_candidates": len(picks),
                        "measured_s": round(loop_s, 1), "same_results": loop == [ours[j] for j in picks],
                        "ours_peak_mb": round(ours_mb), "baseline_peak_mb": round(loop_mb)})
    return {
        "benchmark": "self_instruct",
        "comparisons": comparisons,
        "kept": sum(kept), "dropped": len(kept) - sum(kept), "pairs": total_pairs, "cpus": os.cpu_count(),
        "note": "baseline_s is EXTRAPOLATED: its tokenizing time plus its scoring time on the measured "
                "candidates scaled linearly to all (candidate, instruction) pairs; ours_s is the full run",
    }
