"""`probe`: logistic regression on a frozen feature of the embed stage (raw 0 / revised 1), by default the
all-layer mean `layer_mean` (`iqs.probe_feature`).

It reads the vectors the embed stage computes for clustering anyway, so scoring costs almost nothing more; run
alone (no embeddings input) it encodes the texts itself with the bundled MiniLM. The feature read is the one
the stored probe was fitted on.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tasks.errors import BadInputError
from tasks.iqs.probe import Feature, encode
from tasks.iqs.training import stored_probe, train_on_revisions
from tasks.scorers.base import Scorer, ScorerInputs, Scores, Scoring
from tasks.scorers.trained import RevisionTrained
from tasks.text import table_texts


class ProbeConfig(RevisionTrained):
    scorer: Literal["probe"] = "probe"


def vectors_by_id(inputs: ScorerInputs, feature: Feature) -> dict[str, np.ndarray] | None:
    from tasks.embed import embedding_matrix

    if inputs.embeddings is None:
        return None
    key = inputs.embeddings.key
    columns = [field.split(":")[0] for field in inputs.store.manifest(key).get("schema", [])]
    if feature not in columns:
        raise BadInputError(f"embeddings {key} have no {feature!r} column (embedded before the embed stage kept "
                            "it): embed again", field=feature)
    table = inputs.store.read_table(key, columns=["id", feature])
    ids = table.column("id").to_pylist()
    return dict(zip(ids, embedding_matrix(table.column(feature), ids)))


def open_probe(inputs: ScorerInputs) -> Scoring:
    key = inputs.iqs_model.key
    probe = stored_probe(inputs.store, key)
    vectors = vectors_by_id(inputs, probe.feature)

    def score(rows: Any) -> Scores:
        ids = rows.column("id").to_pylist()
        if vectors is None:
            matrix = encode(table_texts(rows), probe.feature)
        else:
            missing = [i for i in ids if i not in vectors]
            if missing:
                raise BadInputError(f"{len(missing)} conversation id(s) have no {probe.feature} in "
                                    f"{inputs.embeddings.key}, e.g. {missing[0]!r}: the embeddings must come from "
                                    "the same conversations", field=probe.feature)
            matrix = np.stack([vectors[i] for i in ids]) if ids else np.zeros((0, len(probe.weights)), np.float32)
        if matrix.shape[1] != len(probe.weights):
            raise BadInputError(f"{probe.feature} has {matrix.shape[1]} dimensions, the probe of {key} "
                                f"{len(probe.weights)}: embed with the probe's model ({probe.encoder})",
                                field=probe.feature)
        return Scores(probe.scores(matrix))

    return Scoring(score, model=key)


SCORER = Scorer("probe", ProbeConfig, open_probe, needs=frozenset({"embeddings"}), train=train_on_revisions,
                description="logistic regression on the embed stage's all-layer MiniLM means (or sentence "
                            "vectors), trained on expert revisions")
