"""AlignerServing called directly: the core over HTTP, without an upstream."""

from __future__ import annotations

import pytest

from aligner_proxy.server.errors import InvalidRequestError
from aligner_proxy.server.protocol import CorrectRequest, ScoreRequest
from aligner_proxy.server.serving.aligner import AlignerServing
from tests.proxy.fakes import BENIGN_ANSWER, CORRECTION, HARMFUL_ANSWER, FakeCorrectorGenerator, FakeScorer
from tests.proxy.helpers import proxy_components


def aligner(generator: FakeCorrectorGenerator | None = None, scorer: FakeScorer | None = None) -> AlignerServing:
    return proxy_components(generator=generator, scorer=scorer)[1].aligner


async def test_score() -> None:
    response = await aligner().score(ScoreRequest(prompts=["q", "q"], completions=[HARMFUL_ANSWER, BENIGN_ANSWER]))
    assert response.scorer == "fake-scorer" and response.scores == [4.0, -4.0]
    with pytest.raises(InvalidRequestError) as info:
        await aligner().score(ScoreRequest(prompts=["q", "q"], completions=["a"]))
    assert info.value.param == "completions"


async def test_correct_reports_verdicts_and_never_blocks() -> None:
    still_unsafe = FakeScorer(costs={CORRECTION: 2.0})
    request = CorrectRequest.model_validate({"items": [{"question": "q", "answer": HARMFUL_ANSWER}]})
    response = await aligner(scorer=still_unsafe).correct(request)
    [item] = response.items
    assert item.correction == CORRECTION and item.status == "flagged"  # the correction, not a block message
    assert response.corrector_usage.completion_tokens == len(CORRECTION.split())
