"""Instruction Quality Scorer (CaR's ranking half): revision pairs → COMET model → scores of a dataset.

Modules: revisions (input layouts, distance filter, training formats, split), metric (the COMET class),
train (fit and load), training (the iqs.train build shared by the comet and probe scorers), score (batched
scoring), probe (MiniLM logistic regression), evaluate (pairs and baselines), report (pictures). The scorers
are tasks/scorers/, the stages tasks/stages/iqs_train.py and iqs.py.
"""
