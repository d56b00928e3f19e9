"""The scorer against an independent computation on a real model (SmolLM2-135M from its
packaged GGUF, transformers float32).

The reference here tokenises the generation prompt and the response separately and runs
one plain forward pass per sequence, with no batching, no offsets and no code from
pipeline/scoring except loading the tokenizer; the scorer finds the response span from
character offsets of the whole conversation and batches with padding. They must agree.
"""

from __future__ import annotations

import math

import pytest

from pipeline.config import ScorerConfig
from pipeline.record import RejectReason, Sample
from pipeline.scoring.scorer import ScoreRequest

pytestmark = [pytest.mark.model, pytest.mark.slow]

torch = pytest.importorskip("torch")

PAIRS = [
    ScoreRequest("a", "Write a function add(a, b).", "def add(a, b):\n    return a + b\n"),
    ScoreRequest("b", "Reverse a string.", "```python\ndef rev(s):\n    return s[::-1]\n```"),
    ScoreRequest("u", "Say hello in French and add an emoji.", "naïve café — bonjour 🚀 数据"),
    ScoreRequest("e", "", "An answer to an empty instruction."),
    ScoreRequest("t", "One token please.", "x"),
]


@pytest.fixture(scope="module")
def scorer():
    from pipeline.scoring.factory import build_scorer

    sc = build_scorer(ScorerConfig(model="smollm2-135m", threads=2))
    yield sc
    sc.backend.close()


def _reference(scorer, req: ScoreRequest) -> tuple[float, float, int]:
    tok, model = scorer.tok, scorer.backend.model
    prefix = tok.apply_chat_template([{"role": "user", "content": req.instruction}],
                                     tokenize=False, add_generation_prompt=True)
    p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    r_ids = tok(req.response, add_special_tokens=False)["input_ids"]

    def nll(ids: list[int], first: int) -> float:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        lp = torch.log_softmax(logits, dim=-1)
        picks = [lp[j - 1, ids[j]].item() for j in range(first, len(ids))]
        return -sum(picks) / len(picks)

    bos = [tok.bos_token_id]
    return nll(p_ids + r_ids, len(p_ids)), nll(bos + r_ids, 1), len(r_ids)


def test_scores_match_a_direct_forward_pass(scorer) -> None:
    got = scorer.score(PAIRS)
    for req, sc in zip(PAIRS, got, strict=True):
        loss, alone, n = _reference(scorer, req)
        assert sc.error is None, (req.id, sc.error)
        assert sc.response_tokens == n
        assert sc.loss == pytest.approx(loss, rel=1e-4), req.id
        assert sc.loss_alone == pytest.approx(alone, rel=1e-4), req.id
        assert sc.ifd == pytest.approx(loss / alone, rel=2e-4)
    assert got[4].response_tokens == 1  # a one-token response is scored


def test_batched_equals_one_at_a_time(scorer) -> None:
    together = scorer.score(PAIRS)
    for req, sc in zip(PAIRS, together, strict=True):
        alone = scorer.score([req])[0]
        assert sc.loss == pytest.approx(alone.loss, rel=1e-4)
        assert sc.loss_alone == pytest.approx(alone.loss_alone, rel=1e-4)


def test_long_response_is_truncated_by_the_rule_and_recorded(scorer) -> None:
    from pipeline.scoring.scorer import Scorer

    short = Scorer(scorer.backend, scorer.tok, max_tokens=64)
    long = ScoreRequest("l", "Count.", " ".join(str(i) for i in range(200)))
    plan = short.plan(long)
    sc = short.score([long])[0]
    assert len(plan.chat) == 64 and sc.truncated_tokens > 0
    assert sc.response_tokens == 64 - plan.span[0]
    assert sc.response_tokens + sc.truncated_tokens == scorer.score([long])[0].response_tokens
    no_room = short.score([ScoreRequest("n", "word " * 100, "ok")])[0]
    assert no_room.loss is None and "leaving no room" in (no_room.error or "")


def test_unscorable_sample_is_rejected_with_its_reason() -> None:
    from pipeline.stages.score import ScoreStage

    stage = ScoreStage(ScorerConfig(model="smollm2-135m", threads=2))
    stage.setup()
    try:
        good = Sample(id="g", instruction="Add.", response="def add(a, b):\n    return a + b")
        empty = Sample(id="z", instruction="Add.", response="   ")
        out = stage([good, empty])
    finally:
        stage.teardown()
    by_id = {s.id: s for s in out}
    assert by_id["z"].reject_reason is RejectReason.UNSCORABLE
    assert by_id["z"].reject_detail == "empty response" and "loss" not in by_id["z"].scores
    assert math.isfinite(by_id["g"].scores["loss"]) and by_id["g"].scores["ifd"] > 0
    assert stage.counters["scored"] == 1 and stage.counters["dropped_unscorable"] == 1


def test_scores_are_stored_and_a_rerun_loads_no_model(tmp_path) -> None:
    """A resume, rerun or --extend finds the scores in the store by scorer and text."""
    from pipeline.stages.score import ScoreStage

    cfg = ScorerConfig(model="smollm2-135m", threads=2, cache_path=str(tmp_path / "s.sqlite"))

    def batch() -> list[Sample]:
        return [Sample(id=r.id, instruction=r.instruction, response=r.response) for r in PAIRS]

    first = ScoreStage(cfg)
    got = first(batch())
    first.teardown()
    assert first.counters["scored"] == len(PAIRS) and first.counters["score_cached"] == 0
    again = ScoreStage(cfg)
    out = again(batch())
    assert again._scorer is None  # the model was never loaded
    assert again.counters["score_cached"] == again.counters["scored"] == len(PAIRS)
    assert [s.scores for s in out] == [s.scores for s in got]
    again.teardown()
