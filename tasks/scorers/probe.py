"""`probe`: logistic regression on the frozen sentence embeddings of the embed stage (raw 0 / revised 1).

It reads the vectors the embed stage computes for clustering anyway, so scoring costs almost nothing more; run
alone (no embeddings input) it encodes the texts itself with the bundled MiniLM.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tasks.errors import BadInputError
from tasks.iqs.probe import encode
from tasks.iqs.training import RevisionTrained, stored_probe, train_on_revisions
from tasks.scorers.base import Scorer, ScorerInputs, Scores, Scoring
from tasks.text import table_texts


class ProbeConfig(RevisionTrained):
    scorer: Literal["probe"] = "probe"


def vectors_by_id(inputs: ScorerInputs) -> dict[str, np.ndarray] | None:
    from tasks.embed import embedding_matrix

    if inputs.embeddings is None:
        return None
    table = inputs.store.read_table(inputs.embeddings.key, columns=["id", "embedding"])
    ids = table.column("id").to_pylist()
    return dict(zip(ids, embedding_matrix(table.column("embedding"), ids)))


def open_probe(inputs: ScorerInputs) -> Scoring:
    key = inputs.iqs_model.key
    probe = stored_probe(inputs.store, key)
    vectors = vectors_by_id(inputs)

    def score(rows: Any) -> Scores:
        ids = rows.column("id").to_pylist()
        if vectors is None:
            matrix = encode(table_texts(rows))
        else:
            missing = [i for i in ids if i not in vectors]
            if missing:
                raise BadInputError(f"{len(missing)} conversation id(s) have no embedding in "
                                    f"{inputs.embeddings.key}, e.g. {missing[0]!r}: the embeddings must come from "
                                    "the same conversations", field="embedding")
            matrix = np.stack([vectors[i] for i in ids]) if ids else np.zeros((0, len(probe.weights)), np.float32)
        if matrix.shape[1] != len(probe.weights):
            raise BadInputError(f"embeddings have {matrix.shape[1]} dimensions, the probe of {key} "
                                f"{len(probe.weights)}: embed with the probe's model ({probe.encoder})",
                                field="embedding")
        return Scores(probe.scores(matrix))

    return Scoring(score, model=key)


SCORER = Scorer("probe", ProbeConfig, open_probe, needs=frozenset({"embeddings"}), train=train_on_revisions,
                description="logistic regression on the embed stage's sentence vectors, trained on expert revisions")
