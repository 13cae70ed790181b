"""Instruction Quality Scorer (CaR's ranking half): revision pairs → COMET model → scores of a dataset.

Modules: revisions (input layouts, distance filter, training formats, split), metric (the COMET class),
train (fit and load), score (batched scoring), probe (MiniLM logistic regression), evaluate (pairs and
baselines), report (pictures), stages (the StageDefs below).
"""
from tasks.iqs.stages import SCORE_STAGE, TRAIN_STAGE

__all__ = ["SCORE_STAGE", "TRAIN_STAGE"]
