"""Run-wide near-duplicate removal over kept samples, done once in the driver.

Generators run in several workers, each seeing only its own batches, so the same problem
("is_prime" four times from a small model) can be kept repeatedly. After the executor
finishes, the driver walks every kept sample in a fixed order (strategy, round, id) and
drops one whose instruction is a ROUGE-L near-duplicate of an earlier kept one. The
drop is a reject (stage "dedup", reason duplicate) naming the sample it repeats, so it is
counted and written like any other. What is compared is `text_of(sample)`; the driver
passes `pipeline.stages.strategies.dedup_text`, which knows each strategy's instructions.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.novelty import NoveltyIndex
from pipeline.record import RejectReason, Sample

STAGE = "dedup"


def _instruction(sample: Sample) -> str:
    return sample.instruction


def drop_near_duplicates(samples: list[Sample], threshold: float,
                         text_of: Callable[[Sample], str] = _instruction) -> dict[str, int]:
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
        text = text_of(s)
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
