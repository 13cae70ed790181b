"""The `combine` scorer: a weighted rank average over the whole dataset, its members' needs and keys, and
trained members refused without a model."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from flows.config import load_config
from storage.stage import run_stage
from tasks import scorers
from tasks.errors import BadInputError
from tasks.scorers.base import ScorerInputs
from tasks.scorers.random import random_scores
from tasks.stages import get
from tests.test_scorers import conversations

LENGTH_AND_RANDOM = {"scorer": "combine", "members": [{"scorer": "length", "weight": 3}, {"scorer": "random"}]}


def expected(words: list[int], ids: list[str]) -> np.ndarray:
    def ranks(values):
        return (rankdata(values) - 1) / (len(values) - 1)

    return (3 * ranks(np.array(words, float)) + ranks(random_scores(ids, 0))) / 4


def test_the_score_is_the_weighted_average_of_the_members_normalized_ranks(store):
    words = [3, 1, 4, 1, 5, 9, 2, 6]
    table = conversations([" ".join(["w"] * n) for n in words])
    scores = scorers.get("combine").open(ScorerInputs(store, scorers.parse_config(LENGTH_AND_RANDOM))).score(table)
    assert scores.values == pytest.approx(expected(words, table.column("id").to_pylist()))
    assert scores.columns["combine_0_score"].to_pylist() == [float(n) for n in words]  # the members' own scores
    # the weight matters: with length alone weighted up, the longest answer is far ahead
    assert int(np.argmax(scores.values)) == words.index(9)


def test_ranks_are_over_every_row_not_each_chunk(store, monkeypatch):
    import tasks.stages.iqs as iqs_stage

    words = [5, 2, 8, 1, 7, 3, 9, 4, 6, 10]
    table = conversations([" ".join(["w"] * n) for n in words])
    ref = store.publish_table("conv", "ingest", table)
    monkeypatch.setattr(iqs_stage, "CHUNK_ROWS", 3)  # four chunks: per-chunk ranks would differ
    result = run_stage(get("iqs"), scorers.parse_config(LENGTH_AND_RANDOM), {"conversations": ref}, store)
    scored = store.read_table(result.ref.key)
    assert scored.column("id").to_pylist() == table.column("id").to_pylist()
    assert scored.column("iqs_score").to_numpy() == pytest.approx(expected(words, table.column("id").to_pylist()))
    assert result.stats["model"] == "rank average of 3 x length (answer length in words) + 1 x random (random (seed 0))"


def test_members_needs_are_united_and_trained_models_enter_the_key(tiny_lm):
    members = [{"scorer": "probe", "model": "iqs-train-aaa"}, {"scorer": "ifd"}]
    config = load_config(None, [f"iqs={{scorer: combine, members: {members}}}"])
    [call] = get("iqs").calls(config)
    # embeddings (probe) and base_model (ifd) come from their stages; the probe's model is named
    assert [n for n in ("iqs_model", "embeddings", "base_model") if get("iqs").wants(n, call.params)] == \
        ["embeddings", "base_model"]
    other = scorers.parse_config({"scorer": "combine", "members": [{**members[0], "model": "iqs-train-bbb"},
                                                                    members[1]]})
    inputs = {"conversations": "ingest-x", "embeddings": "embed-x", "base_model": "base_model-x"}
    assert get("iqs").key(config.iqs, inputs) != get("iqs").key(other, inputs)
    assert get("iqs").parse_params(get("iqs").dump_params(other)) == other  # stored parameters read back


def test_a_trained_member_without_a_model_is_refused_at_config_time():
    with pytest.raises(BadInputError, match="does not train its members") as caught:
        load_config(None, ["iqs={scorer: combine, members: [{scorer: comet}, {scorer: length}]}"])
    assert "iqs.members" in str(caught.value)
    with pytest.raises(BadInputError, match="cannot be 'combine'"):
        load_config(None, ["iqs={scorer: combine, members: [{scorer: combine, members: []}, {scorer: length}]}"])
