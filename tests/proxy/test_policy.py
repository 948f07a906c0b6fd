"""The alignment policy on its own: modes, keep-best, block, the failure policy, and streamed answers."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.core.loading import CoreConfig, make_pipeline
from aligner_proxy.core.policy import LOOPED_CORRECTION, AlignmentPipeline, CorrectionStream, Outcome, PolicyConfig
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


async def test_a_looped_correction_never_replaces_the_answer() -> None:
    """A correction the loop guard cut repeats itself, however low the gate scores it: the original stays,
    judged on its own cost, and the annotation says why."""
    looping = FakeCorrectorGenerator(text="You will need a barrel, a barrel, a barrel.", behaviour="loop")
    [blocked] = await pipeline(generator=looping).align(items(HARMFUL_ANSWER), PolicyConfig(mode="gated", block=True))
    [flagged] = await pipeline(generator=looping).align(items(HARMFUL_ANSWER), PolicyConfig(mode="gated", block=False))
    assert blocked.status == "blocked" and blocked.error == LOOPED_CORRECTION
    assert flagged.status == "flagged" and flagged.text == HARMFUL_ANSWER
    [benign] = await pipeline(generator=looping).align(items(BENIGN), PolicyConfig(mode="always", block=True))
    assert benign.status == "passed" and benign.text == BENIGN  # byte-identical, not a looped rewrite


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
    scorer = FakeScorer()
    p = pipeline(scorer)
    await asyncio.gather(*(p.align(items(BENIGN), PolicyConfig()) for _ in range(6)))
    assert max(scorer.calls) > 1  # several requests were scored in one call


# ------------------------------------------------------------------ streamed answers


async def streamed(
    p: AlignmentPipeline, answer: str, config: PolicyConfig
) -> tuple[list[str], CorrectionStream, Outcome]:
    """Assess ``answer``, stream its final text; the pieces, the stream, and the assessed outcome."""
    [assessed] = await p.assess(items(answer), ["q?"], config)
    stream = p.stream_correction(items(answer)[0], "q?", assessed, config)
    async with aclosing(stream):
        pieces = [piece async for piece in stream]
    return pieces, stream, assessed


async def test_a_passing_answer_streams_as_it_was_in_one_piece() -> None:
    pieces, stream, _ = await streamed(pipeline(), BENIGN, PolicyConfig())
    assert pieces == [BENIGN] and stream.outcome.status == "passed"


async def test_a_relayed_correction_streams_piece_by_piece_and_is_rescored() -> None:
    pieces, stream, assessed = await streamed(pipeline(), HARMFUL_ANSWER, PolicyConfig(block=False))
    assert len(pieces) > 1 and "".join(pieces) == CORRECTION
    assert stream.outcome.status == "modified" and stream.outcome.text == CORRECTION
    assert (stream.outcome.cost_before, stream.outcome.cost_after) == (4.0, -4.0)
    assert assessed.status == "passed" and assessed.text == HARMFUL_ANSWER  # the assessment is left as it was


async def test_a_relayed_correction_still_above_the_threshold_is_flagged_as_sent() -> None:
    scorer = FakeScorer(costs={CORRECTION: 2.0})
    pieces, stream, _ = await streamed(pipeline(scorer), HARMFUL_ANSWER, PolicyConfig(block=False))
    assert "".join(pieces) == CORRECTION and stream.outcome.status == "flagged"


async def test_with_block_the_whole_correction_is_judged_before_one_piece_is_sent() -> None:
    config = PolicyConfig(block=True, block_message="Blocked.")
    pieces, stream, _ = await streamed(pipeline(FakeScorer(costs={CORRECTION: 2.0})), HARMFUL_ANSWER, config)
    assert pieces == ["Blocked."] and stream.outcome.status == "blocked"
    pieces, stream, _ = await streamed(pipeline(), HARMFUL_ANSWER, config)
    assert pieces == [CORRECTION] and stream.outcome.status == "modified"


async def test_an_empty_streamed_correction_sends_the_original() -> None:
    p = pipeline(generator=FakeCorrectorGenerator(behaviour="empty"))
    pieces, stream, _ = await streamed(p, HARMFUL_ANSWER, PolicyConfig(block=False))
    assert pieces == [HARMFUL_ANSWER]
    assert stream.outcome.status == "flagged" and stream.outcome.cost_after == 4.0  # judged on the original


@pytest.mark.parametrize("behaviour", ["raise", "hang"])
async def test_a_failure_before_the_first_piece_follows_the_failure_policy(behaviour: str) -> None:
    p = pipeline(generator=FakeCorrectorGenerator(behaviour=behaviour), timeout_s=0.3)  # type: ignore[arg-type]
    pieces, stream, _ = await streamed(p, HARMFUL_ANSWER, PolicyConfig(block=False, failure_policy="fail_open"))
    assert pieces == [HARMFUL_ANSWER]
    assert stream.outcome.status == "unchecked" and stream.outcome.error
    assert stream.outcome.cost_before == 4.0  # the assessment is still reported
    with pytest.raises(AlignmentError, match="fails closed"):
        await streamed(p, HARMFUL_ANSWER, PolicyConfig(block=False, failure_policy="fail_closed"))


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
@pytest.mark.parametrize(
    "generator",
    [FakeCorrectorGenerator(behaviour="raise_midstream"), FakeCorrectorGenerator(word_delay_s=0.15)],
    ids=["dies", "times-out"],
)
async def test_a_failure_after_the_first_piece_ends_the_stream_whatever_the_policy(
    policy: str, generator: FakeCorrectorGenerator
) -> None:
    p = pipeline(generator=generator, timeout_s=0.4)
    config = PolicyConfig(block=False, failure_policy=policy)  # type: ignore[arg-type]
    [assessed] = await p.assess(items(HARMFUL_ANSWER), ["q?"], config)
    stream = p.stream_correction(items(HARMFUL_ANSWER)[0], "q?", assessed, config)
    sent: list[str] = []
    with pytest.raises(AlignmentError, match="mid-stream"):
        async with aclosing(stream):
            async for piece in stream:
                sent.append(piece)
    assert sent and CORRECTION.startswith("".join(sent)) and "".join(sent) != CORRECTION
    assert stream.outcome.status == "unchecked" and stream.outcome.text == "".join(sent) and stream.outcome.error


async def test_the_time_limit_counts_the_correctors_time_not_the_callers() -> None:
    p = pipeline(timeout_s=0.2)
    config = PolicyConfig(block=False)
    [assessed] = await p.assess(items(HARMFUL_ANSWER), ["q?"], config)
    stream = p.stream_correction(items(HARMFUL_ANSWER)[0], "q?", assessed, config)
    pieces = []
    async with aclosing(stream):
        async for piece in stream:
            pieces.append(piece)
            await asyncio.sleep(0.03)  # a slow client: all the pieces take longer than the limit
    assert "".join(pieces) == CORRECTION and stream.outcome.status == "modified"


async def test_closing_a_stream_early_stops_the_corrector() -> None:
    generator = FakeCorrectorGenerator()
    p = pipeline(generator=generator)
    config = PolicyConfig(block=False)
    [assessed] = await p.assess(items(HARMFUL_ANSWER), ["q?"], config)
    stream = p.stream_correction(items(HARMFUL_ANSWER)[0], "q?", assessed, config)
    async with aclosing(stream):
        async for _piece in stream:
            break
    assert generator.streams_closed == 1


async def test_assessment_follows_the_failure_policy() -> None:
    p = pipeline(FakeScorer("raise"))
    outcomes = await p.assess(items(HARMFUL_ANSWER, BENIGN), ["q?", "q?"], PolicyConfig(failure_policy="fail_open"))
    assert [o.status for o in outcomes] == ["unchecked", "unchecked"]
    assert not any(o.needs_correction for o in outcomes)
    with pytest.raises(AlignmentError):
        await p.assess(items(HARMFUL_ANSWER), ["q?"], PolicyConfig(failure_policy="fail_closed"))


async def test_an_empty_correction_is_a_corrector_failure() -> None:
    """fail_open keeps the original, judged on its own cost, and says why; fail_closed fails, whole or streamed."""
    p = pipeline(generator=FakeCorrectorGenerator(behaviour="empty"))
    [kept] = await p.align(items(HARMFUL_ANSWER), PolicyConfig(mode="always", block=False))
    assert kept.status == "flagged" and kept.error == "the corrector returned an empty correction"
    with pytest.raises(AlignmentError, match="empty correction") as caught:
        await p.align(items(HARMFUL_ANSWER), PolicyConfig(mode="always", failure_policy="fail_closed"))
    assert caught.value.detail and "EmptyCorrectionError" in caught.value.detail
    with pytest.raises(AlignmentError, match="empty correction"):
        await streamed(p, HARMFUL_ANSWER, PolicyConfig(block=False, failure_policy="fail_closed"))


async def test_failures_show_clients_their_kind_never_their_message() -> None:
    """An exception's message can name internal hosts; the annotation and the 503 carry the kind only."""

    class Leaky(FakeCorrectorGenerator):
        async def generate(self, prompts, params):  # type: ignore[no-untyped-def]
            raise ConnectionError("cannot reach http://10.0.0.7:8001/v1 with key sk-internal-0123456789")

    p = pipeline(generator=Leaky())
    [outcome] = await p.align(items(HARMFUL_ANSWER), PolicyConfig(mode="always"))
    assert outcome.status == "unchecked" and outcome.error == "ConnectionError"
    with pytest.raises(AlignmentError) as caught:
        await p.align(items(HARMFUL_ANSWER), PolicyConfig(mode="always", failure_policy="fail_closed"))
    assert "10.0.0.7" not in caught.value.message and "sk-internal" not in (caught.value.detail or "")
    assert "10.0.0.7" in (caught.value.detail or "")  # the operator's record keeps the host
