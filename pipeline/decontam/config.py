"""Config sections of decontamination (`decontam`) and de-duplication (`dedup`).

The thresholds' defaults were tuned on the tune half of the hand-written evaluation set
(benchmarks/data/decontam/, see benchmarks/decontam.py); the figures in the README are
from the other half.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config_base import _Section

Method = Literal["ngram", "embedding", "execution"]


class BenchmarkSpec(_Section):
    """A benchmark to decontaminate against, beyond the built-in `humaneval` and `mbpp`."""

    name: str = Field(description="What rejected samples name as their `benchmark`.")
    path: str | None = Field(None, description="A JSONL file of the benchmark's problems.")
    dataset: str | None = Field(None, description="A Hugging Face dataset name (read with "
                                "datasets.load_dataset; offline only once cached).")
    subset: str | None = Field(None, description="dataset: the configuration name.")
    split: str = Field("test", description="dataset: the split to read.")
    id_field: str = Field("task_id", description="Field with the problem's id.")
    instruction_field: str = Field("prompt", description="Field with the problem text.")
    code_field: str | None = Field("code", description="Field with a reference solution.")
    tests_field: str | None = Field(None, description="Field with Python tests of the "
                                    "function named by entry_point_field (for execution).")
    entry_point_field: str | None = Field(None, description="Field with the function name "
                                          "the tests call.")

    @model_validator(mode="after")
    def _check(self) -> BenchmarkSpec:
        if (self.path is None) == (self.dataset is None) and self.name not in ("humaneval",
                                                                                 "mbpp"):
            raise ValueError(f"decontam benchmark {self.name!r}: give exactly one of path "
                             "(a JSONL file) or dataset (a Hugging Face dataset name)")
        return self


class DecontamConfig(_Section):
    """Benchmark decontamination (pipeline/decontam): samples that restate a benchmark
    problem are rejected as `contaminated`."""

    enabled: bool = Field(True, description="Check instructions before they are solved and "
                          "final code after verification.")
    benchmarks: list[str | BenchmarkSpec] = Field(
        default_factory=lambda: ["humaneval", "mbpp"], description="humaneval, mbpp (all 974), "
        "a JSONL path (fields task_id, prompt, code) or a BenchmarkSpec mapping.")
    methods: list[Method] = Field(
        default_factory=lambda: ["ngram", "embedding", "execution"],
        description="ngram: normalised word and code-token n-gram containment (copies); "
        "embedding: all-MiniLM-L6-v2 cosine of instructions and of code (paraphrases); "
        "execution: the sample's function run against the nearest benchmark items' own "
        "tests in the sandbox (same behaviour). A sample is contaminated when any fires.")
    text_ngram: int = Field(8, ge=3, description="ngram: words per instruction n-gram.")
    code_ngram: int = Field(12, ge=3, description="ngram: tokens per code n-gram (names, "
                            "numbers and strings normalised).")
    ngram_threshold: float = Field(0.5, gt=0, le=1, description="ngram: share of the "
                                   "shorter side's n-grams found in one benchmark item.")
    embedding_threshold: float = Field(0.8, gt=0, le=1, description="embedding: cosine of "
                                       "the instruction with a benchmark problem's text.")
    code_embedding_threshold: float = Field(0.95, gt=0, le=1, description="embedding: "
                                            "cosine of the code with a benchmark solution.")
    execution_top_k: int = Field(3, ge=1, description="execution: nearest items (by "
                                 "instruction and by code embedding) tried first.")
    execution_agreement: float = Field(0.8, ge=0, le=1, description="execution: after an "
                                       "item's tests pass, the share of altered test inputs "
                                       "on which the code must agree with the item's "
                                       "reference solution.")
    batch_size: int = Field(64, ge=1, description="Samples per decontamination batch.")

    @model_validator(mode="after")
    def _check(self) -> DecontamConfig:
        if self.enabled and not self.methods:
            raise ValueError("decontam.methods is empty; list at least one of ngram, "
                             "embedding, execution, or set decontam.enabled: false")
        if self.enabled and not self.benchmarks:
            raise ValueError("decontam.benchmarks is empty; list humaneval, mbpp or a path, "
                             "or set decontam.enabled: false")
        return self


class DedupConfig(_Section):
    """Exact and near-duplicate code removal (global steps; the ROUGE-L check on
    instructions is generation.dedup_threshold)."""

    exact: bool = Field(True, description="Drop a sample whose normalised instruction and "
                        "normalised code equal an earlier kept one's.")
    minhash_threshold: float | None = Field(
        0.85, gt=0, le=1, description="Drop a sample whose code's estimated Jaccard "
        "similarity (MinHash LSH over identifier-normalised token 5-grams) with an earlier "
        "kept one's is >= this; null turns it off.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations.")
    against: list[str] = Field(default_factory=list, description="Earlier runs' output "
                               "directories (or dataset directories) whose rows count as "
                               "already taken: a sample that duplicates one is dropped.")
