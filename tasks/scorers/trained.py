"""The config base of scorers trained on (raw, revised) expert pairs, CaR's IQS (comet) and its probe: where
the revisions are, how they are filtered and split. The training itself is tasks/iqs/training.py."""
from __future__ import annotations

from pydantic import Field

from storage.params import NOT_IN_KEY, PATH, in_key_of
from tasks.digest import file_sha256
from tasks.errors import BadInputError
from tasks.iqs import hub
from tasks.iqs.probe import DEFAULT_FEATURE, Feature
from tasks.scorers.base import ScorerConfig

TRAINING = in_key_of("iqs.train")  # a training setting: the trained model's key covers it for scoring


class RevisionTrained(ScorerConfig):
    """A scorer trained on (raw, revised) expert pairs: CaR's IQS and its probe."""

    model: str | None = Field(None, json_schema_extra=NOT_IN_KEY,
                              description="store key of a trained IQS model; trained from `revisions` if empty; "
                                          "hf:OWNER/NAME imports a COMET checkpoint from the Hugging Face hub "
                                          "(CaR's: hf:GyQAQ/Instruction-quality-scoring; SFTFLOW_ONLINE=1)")
    revisions: list[str] = Field(default_factory=list, json_schema_extra={**TRAINING, **PATH},
                                 description="revision files to train an IQS model on: expert revision "
                                             "JSON/JSONL records or CaR src,score CSV pairs")
    validation_revisions: list[str] = Field(default_factory=list, json_schema_extra={**TRAINING, **PATH},
                                            description="validation pairs; when empty, valid_fraction of the "
                                                        "revision pairs, split by a hash of their text")
    valid_fraction: float = Field(0.1, gt=0, lt=1, json_schema_extra=TRAINING,
                                  description="share of pairs held out when no validation files")
    min_distance: int = Field(200, ge=0, json_schema_extra=TRAINING,
                              description="drop revisions closer than this edit distance (CaR: 200)")
    filter_prepared_pairs: bool = Field(False, json_schema_extra=TRAINING,
                                        description="apply min_distance to src,score CSVs too (CaR's published "
                                                    "CSVs are prepared training data, half under 200 apart)")
    normalize_whitespace: bool = Field(True, json_schema_extra=TRAINING,
                                       description="collapse whitespace runs in training and scoring (raw CaR "
                                                   "responses never contain a newline; revisions mostly do)")
    seed: int = Field(42, json_schema_extra=TRAINING)
    probe_c: float = Field(1.0, gt=0, json_schema_extra=TRAINING,
                           description="inverse regularization of the probe's logistic regression")
    probe_feature: Feature = Field(DEFAULT_FEATURE, json_schema_extra=TRAINING,
                                   description="what the probe reads of the embed stage: layer_mean (every MiniLM "
                                               "layer averaged, 94.1% on CaR's pairs) or embedding (the sentence "
                                               "vector, 90.6%)")

    def input_checksums(self) -> dict[str, str]:
        """The key of iqs.train covers the content of its inputs, not only their names: the revision files, and
        the commit of a hub checkpoint it imports."""
        sums = {self.model: hub.revision(self.model)} if hub.is_hub_model(self.model) else {}
        for path in [*self.revisions, *self.validation_revisions]:
            try:
                sums[path] = file_sha256(path)
            except OSError as exc:
                raise BadInputError(f"cannot read revision file: {exc.strerror}", file=path) from exc
        return sums
