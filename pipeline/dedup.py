"""Run-wide near-duplicate removal over kept samples, done once in the driver.

Generators run in several workers, each seeing only its own batches, so the same problem
("is_prime" four times from a small model) can be kept repeatedly. After the executor
finishes, the driver walks every kept sample in a fixed order (strategy, round, id) and
drops one whose instruction is a ROUGE-L near-duplicate of an earlier kept one. The
drop is a reject (stage "dedup", reason duplicate) naming the sample it repeats, so it is
counted and written like any other. Case2Code tasks are compared on their example calls
and values only (`dedup_text`): their shared prompt text made every two of them look
alike (measured: 6 of 7 verified Case2Code tasks of a real run dropped, e.g.
`collapse_whitespace` as a repeat of `caesar_shift`).
"""

from __future__ import annotations

from pipeline.novelty import NoveltyIndex
from pipeline.record import RejectReason, Sample

STAGE = "dedup"


def dedup_text(sample: Sample) -> str:
    """What is compared: the instruction, or for Case2Code only its example calls and
    values (its prompt text is the same for every task)."""
    if sample.strategy == "case2code":
        from pipeline.stages.case2code import case_examples_text, case_function

        try:
            name = case_function(sample.tests)
        except SyntaxError:
            name = ""
        return case_examples_text(sample.instruction, name)
    return sample.instruction


def drop_near_duplicates(samples: list[Sample], threshold: float) -> dict[str, int]:
    """Reject kept samples whose instruction nearly repeats an earlier kept one.

    Exempt: transformation variants (`kind` set: similar to their parent by design) and
    further candidates of an instruction already kept (same parent and same text: several
    verified solutions of one problem). Returns counters for stats.json.
    """
    index = NoveltyIndex(threshold)
    owners: list[Sample] = []
    first_parent: dict[str, str | None] = {}
    kept = sorted((s for s in samples if not s.rejected and s.kind is None),
                  key=lambda s: (s.strategy, s.round, s.id))
    dropped = 0
    for s in kept:
        if s.instruction in first_parent and first_parent[s.instruction] == s.parent_id:
            continue
        text = dedup_text(s)
        score, match = index.max_similarity(text)
        if match is not None and score >= threshold:
            s.reject(STAGE, RejectReason.DUPLICATE,
                     f"ROUGE-L {score:.2f} >= {threshold} against kept sample {owners[match].id}")
            dropped += 1
            continue
        index.add(text)
        owners.append(s)
        first_parent.setdefault(s.instruction, s.parent_id)
    return {"in": len(kept), "out": len(kept) - dropped, "dropped_duplicate": dropped}
