"""Evaluation of a model on held-out conversations: "did my selection help?" (issue 16).

- `loss`: per-row supervised cross-entropy of a causal LM (optionally with a peft adapter) on tokenized rows;
- `stats`: mean loss and perplexity with bootstrap intervals, and the paired bootstrap between two models;
- `holdout`: the seeded held-out split of a pool and the check that an evaluation set does not overlap it;
- `gold`: CaR's expert-revised validation responses as canonical conversations;
- `report`: the ablation's table, bar chart and plain sentence.

Answers to a list of prompts come from `tasks.generate.answer`.
"""
