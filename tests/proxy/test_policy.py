"""The alignment policy on its own: modes, keep-best, block, and the failure policy."""

from __future__ import annotations

import pytest

from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.core.loading import CoreConfig, make_pipeline
from aligner_proxy.core.policy import AlignmentPipeline, PolicyConfig
from tests.proxy.fakes import CORRECTION, HARMFUL_ANSWER, FakeCorrectorGenerator, FakeScorer

BENIGN = "Water boils at 100 C at sea level."


def pipeline(
    scorer: FakeScorer | None = None, generator: FakeCorrectorGenerator | None = None, timeout_s: float = 5.0
) -> AlignmentPipeline:
    return make_pipeline(
        CoreConfig(alignment_timeout_s=timeout_s),
        scorer=scorer or FakeScorer(),
        corrector_generator=generator or FakeCorrectorGenerator(),
    )


def items(*answers: str) -> list[CorrectionInput]:
    return [CorrectionInput(question="q?", answer=a) for a in answers]


async def test_gated_passes_low_cost_answers_untouched_and_corrects_the_rest() -> None:
    generator = FakeCorrectorGenerator()
    outcomes = await pipeline(generator=generator).align(items(BENIGN, HARMFUL_ANSWER), PolicyConfig(mode="gated"))
    assert [o.status for o in outcomes] == ["passed", "modified"]
    assert outcomes[0].text is BENIGN  # the very same string object: byte-identical
    assert outcomes[1].text == CORRECTION
    assert outcomes[1].cost_before == 4.0 and outcomes[1].cost_after == -4.0
    assert len(generator.prompts) == 1  # only the unsafe answer went to the corrector


async def test_always_corrects_everything() -> None:
    outcomes = await pipeline().align(items(BENIGN), PolicyConfig(mode="always"))
    assert outcomes[0].status == "modified" and outcomes[0].text == CORRECTION


async def test_off_skips() -> None:
    scorer = FakeScorer()
    outcomes = await pipeline(scorer).align(items(HARMFUL_ANSWER), PolicyConfig(mode="off"))
    assert outcomes[0].status == "skipped" and outcomes[0].text == HARMFUL_ANSWER
    assert scorer.calls == []


async def test_gated_keeps_the_original_when_the_correction_is_costlier() -> None:
    scorer = FakeScorer(costs={HARMFUL_ANSWER: 1.0, CORRECTION: 3.0})
    [outcome] = await pipeline(scorer).align(items(HARMFUL_ANSWER), PolicyConfig(mode="gated", block=False))
    # the original is kept, and it is still above the threshold: never reported as passed
    assert outcome.text == HARMFUL_ANSWER and outcome.status == "flagged"
    assert outcome.cost_after == 1.0


async def test_a_correction_still_above_the_threshold_is_flagged_not_modified() -> None:
    scorer = FakeScorer(costs={CORRECTION: 2.0})  # safer than 4.0, still unsafe
    [outcome] = await pipeline(scorer).align(items(HARMFUL_ANSWER), PolicyConfig(mode="gated", block=False))
    assert outcome.text == CORRECTION and outcome.status == "flagged"
    assert (outcome.cost_before, outcome.cost_after) == (4.0, 2.0)
    [lower] = await pipeline(scorer).align(
        items(HARMFUL_ANSWER), PolicyConfig(mode="gated", threshold=2.5, block=False)
    )
    assert lower.status == "modified"  # below a threshold the request chose, it counts as fixed


async def test_an_unset_threshold_is_the_scorers_calibrated_one() -> None:
    scorer = FakeScorer(costs={HARMFUL_ANSWER: 1.0})
    scorer.default_threshold = 1.5  # type: ignore[attr-defined]
    p = pipeline(scorer)
    assert p.resolve(PolicyConfig()).threshold == 1.5
    [outcome] = await p.align(items(HARMFUL_ANSWER), PolicyConfig(mode="gated"))
    assert outcome.status == "passed" and outcome.text is HARMFUL_ANSWER  # 1.0 <= 1.5
    [explicit] = await p.align(items(HARMFUL_ANSWER), PolicyConfig(mode="gated", threshold=0.0))
    assert explicit.status == "modified"  # a request's own threshold still wins
    assert pipeline(FakeScorer()).resolve(PolicyConfig()).threshold == 0.0  # no calibration: the scale's 0


async def test_block_when_still_unsafe_after_correction() -> None:
    scorer = FakeScorer(costs={CORRECTION: 2.0})
    config = PolicyConfig(mode="gated", block=True, block_message="Blocked.")
    [outcome] = await pipeline(scorer).align(items(HARMFUL_ANSWER), config)
    assert outcome.status == "blocked" and outcome.text == "Blocked."
    [safe] = await pipeline().align(items(HARMFUL_ANSWER), config)
    assert safe.status == "modified"


async def test_empty_correction_never_replaces_the_answer() -> None:
    [outcome] = await pipeline(generator=FakeCorrectorGenerator(behaviour="empty")).align(
        items(HARMFUL_ANSWER), PolicyConfig(mode="always", block=False)
    )
    assert outcome.text == HARMFUL_ANSWER and outcome.status == "flagged"  # still the unsafe original


@pytest.mark.parametrize(
    ("scorer", "generator"),
    [
        (FakeScorer("raise"), FakeCorrectorGenerator()),
        (FakeScorer(), FakeCorrectorGenerator(behaviour="raise")),
        (FakeScorer(), FakeCorrectorGenerator(behaviour="hang")),
    ],
    ids=["scorer-raises", "corrector-raises", "corrector-times-out"],
)
async def test_failure_policy(scorer: FakeScorer, generator: FakeCorrectorGenerator) -> None:
    p = pipeline(scorer, generator, timeout_s=0.3)
    [outcome] = await p.align(items(HARMFUL_ANSWER), PolicyConfig(failure_policy="fail_open"))
    assert outcome.status == "unchecked" and outcome.text == HARMFUL_ANSWER and outcome.error
    with pytest.raises(AlignmentError):
        await p.align(items(HARMFUL_ANSWER), PolicyConfig(failure_policy="fail_closed"))


async def test_concurrent_calls_share_scorer_batches() -> None:
    import asyncio

    scorer = FakeScorer()
    p = pipeline(scorer)
    await asyncio.gather(*(p.align(items(BENIGN), PolicyConfig()) for _ in range(6)))
    assert max(scorer.calls) > 1  # several requests were scored in one call
