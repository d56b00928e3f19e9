"""Near-duplicate removal as global steps: run-wide dedup and the Self-Instruct pool.

Generators run in several workers, each seeing only its own batches, so the same problem
("is_prime" four times from a small model) can be kept repeatedly, and two LLM actors can
each accept the same Self-Instruct task into their own pool. Both steps below see every
live sample of their scope at once, walk them in a fixed order (strategy, round, id) and
reject one whose text is a ROUGE-L near-duplicate (>= threshold) of an earlier kept one
or of a pool item (reason `duplicate`, naming what it repeats). A rejected sample takes its
transformation variants with it (`GlobalStep`).

- `DedupStep` ("dedup"): every kept sample, after generation and verification and before
  transformations, so no variant is made of a sample that is dropped. What is compared is
  each strategy's `dedup_text` (`pipeline.stages.strategies.dedup_text`). Exempt:
  transformation variants (similar to their parent by design) and further candidates of
  an instruction already kept (same parent and text: several verified solutions of one
  problem).
- `SelfInstructNoveltyStep` ("self_instruct_novelty"): Self-Instruct's novelty rule across
  all actors, right after generation and before the solve stage, so no duplicate is
  solved; the pool starts with the seed instructions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from pipeline.novelty import NoveltyIndex
from pipeline.record import RejectReason, Sample
from pipeline.stage import GlobalStep


def reject_near_duplicates(samples: list[Sample], stage: str, threshold: float,
                           text_of: Callable[[Sample], str], pool: Iterable[str] = (),
                           exempt: Callable[[Sample, dict[str, str | None]], bool] | None = None,
                           ) -> int:
    """Reject, in (strategy, round, id) order, each sample whose text nearly repeats a
    pool item or an earlier kept sample. `exempt(sample, first_parent)` (first_parent:
    instruction -> parent of the first kept sample with it) skips a sample without
    comparing or adding it. Returns how many were rejected."""
    index = NoveltyIndex(threshold)
    owners: list[str] = []
    for text in pool:
        index.add(text)
        owners.append(f"pool item: {text[:200]}")
    first_parent: dict[str, str | None] = {}
    dropped = 0
    for s in sorted(samples, key=lambda s: (s.strategy, s.round, s.id)):
        if exempt is not None and exempt(s, first_parent):
            continue
        text = text_of(s)
        score, match = index.max_similarity(text)
        if match is not None and score >= threshold:
            s.reject(stage, RejectReason.DUPLICATE,
                     f"ROUGE-L {score:.3f} >= {threshold} against {owners[match]}")
            dropped += 1
            continue
        index.add(text)
        owners.append(f"kept sample {s.id}")
        first_parent.setdefault(s.instruction, s.parent_id)
    return dropped


def _variant_or_candidate(s: Sample, first_parent: dict[str, str | None]) -> bool:
    return s.kind is not None or (s.instruction in first_parent
                                  and first_parent[s.instruction] == s.parent_id)


class DedupStep(GlobalStep):
    """Run-wide ROUGE-L near-duplicate removal over kept samples (module docstring)."""

    name: ClassVar[str] = "dedup"
    inputs: ClassVar[tuple[str, ...]] = ("instruction",)

    def __init__(self, threshold: float, text_of: Callable[[Sample], str],
                 against: list[str] | None = None) -> None:
        super().__init__()
        self.threshold = threshold
        self.text_of = text_of
        self.against = list(against or [])

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        pool: list[str] = []
        if self.against:  # earlier runs' instructions count as taken (dedup.against)
            from pipeline.dedup_code import previous_rows

            pool = [instruction for _, instruction, _ in previous_rows(self.against)]
        reject_near_duplicates(samples, self.name, self.threshold, self.text_of, pool=pool,
                               exempt=_variant_or_candidate)
        return samples


def _instruction(sample: Sample) -> str:
    return sample.instruction


class SelfInstructNoveltyStep(GlobalStep):
    """Self-Instruct's pool-wide novelty rule over every actor's tasks (module docstring)."""

    name: ClassVar[str] = "self_instruct_novelty"
    inputs: ClassVar[tuple[str, ...]] = ("instruction",)

    def __init__(self, threshold: float, seed_instructions: list[str]) -> None:
        super().__init__()
        self.threshold = threshold
        self.seed_instructions = list(seed_instructions)

    def accepts(self, sample: Sample) -> bool:
        """Generated Self-Instruct tasks (no solution yet)."""
        return sample.strategy == "self_instruct" and sample.round > 0 and not sample.code

    def process_all(self, samples: list[Sample]) -> list[Sample]:
        reject_near_duplicates(samples, self.name, self.threshold, _instruction,
                               pool=self.seed_instructions)
        return samples
