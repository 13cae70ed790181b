"""The dedup stage's configuration section (every rule switchable, conservative defaults)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from storage.params import NOT_IN_KEY
from storage.params import Section as Strict
from tasks.ingest.config import SourceConfig, sources_from_paths


class NearConfig(Strict):
    enabled: bool = Field(True, description="remove near-duplicates (MinHash-LSH over word shingles, verified with "
                                            "the exact Jaccard)")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of the word-shingle sets at which a "
                                                          "row is a near-duplicate: of the whole normalized text "
                                                          "and of the prompt alone (rows sharing only an answer "
                                                          "are answer groups)")
    shingle: int = Field(3, ge=1, description="words per shingle; 3 keeps a text with reordered sentences or one "
                                              "changed word above 0.8 while short texts that differ in a word "
                                              "fall well below it")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    bands: int | None = Field(None, ge=1, description="LSH bands (rows per band = num_perm // bands); empty: the "
                                                      "fewest rows per band that still make a pair at the "
                                                      "threshold a candidate with probability >= 0.99")
    seed: int = Field(1, description="seed of the MinHash permutations")


class SemanticConfig(Strict):
    enabled: bool = Field(True, description="remove semantic duplicates (SemDeDup): pairs of embeddings with a "
                                            "cosine similarity at or above the threshold")
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity of the embed stage's L2-normalized "
                                                           "embeddings at which a row is a semantic duplicate")
    nlist: int | None = Field(None, ge=1, description="faiss IVF cells; empty: 4 x sqrt(rows) (an exact flat "
                                                      "index below 20,000 rows)")
    nprobe: int = Field(16, ge=1, description="IVF cells searched per row (more: fewer missed pairs, slower)")
    neighbors: int = Field(16, ge=2, description="nearest neighbours searched per row; a row whose last neighbour "
                                                 "is still above the threshold is searched again without limit")


class ContaminationConfig(Strict):
    ngram: int = Field(13, ge=1, description="a training row is contaminated when it shares a run of this many "
                                             "normalized words with an evaluation prompt or answer (GPT-3, datatrove)")
    min_words: int = Field(4, ge=1, description="an evaluation prompt shorter than `ngram` words matches as a whole "
                                                "(all its words in a row); prompts shorter than this are too generic "
                                                "to match and are counted, not used")


class AnswerGroupConfig(Strict):
    enabled: bool = Field(True, description="flag rows whose answers are near-identical but whose prompts differ "
                                            "as one group; they stay, and select takes at most one row of a group")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of the answers' normalized word sets")
    min_words: int = Field(15, ge=1, description="answers shorter than this many words are never grouped: short "
                                                 "answers (a label, a number, yes/no) are shared by unrelated rows")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations for finding candidate pairs")


class DedupConfig(Strict):
    enabled: bool = Field(True, description="false: no dedup stage; the later stages read the ingested rows")
    mode: Literal["remove", "flag"] = Field("remove", description="remove: removed rows go to the -removed "
                                                                  "companion; flag: every row stays, with the "
                                                                  "decision columns added")
    near: NearConfig = Field(default_factory=NearConfig)
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)
    decontaminate: list[SourceConfig] = Field(default_factory=list, description="evaluation files whose prompts and "
                                            "answers must not appear in the training data")
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)
    answer_groups: AnswerGroupConfig = Field(default_factory=AnswerGroupConfig)
    device: Literal["auto", "cpu", "gpu"] = Field("auto", json_schema_extra=NOT_IN_KEY,
                                                  description="semantic search: gpu when faiss sees one (auto)")
    examples: int = Field(5, ge=0, json_schema_extra=NOT_IN_KEY, description="duplicate groups shown per rule in "
                                                                             "the report")

    _paths_as_sources = field_validator("decontaminate", mode="before")(sources_from_paths)
