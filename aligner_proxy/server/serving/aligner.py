"""``/v1/aligner/score`` and ``/v1/aligner/correct``: the core over HTTP, without an upstream.

The batch tools and other services use these to score texts or correct
(question, answer) pairs with the proxy's loaded models.
"""

from __future__ import annotations

from aligner_proxy.core.annotation import CorrectedItem, CorrectResponse, TokenUsage
from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.policy import AlignmentPipeline, PolicyConfig
from aligner_proxy.server.errors import InvalidRequestError
from aligner_proxy.server.protocol import CorrectRequest, ScoreRequest, ScoreResponse


class AlignerServing:
    """Scores and corrections on request, through the same pipeline as the proxied answers."""

    def __init__(self, pipeline: AlignmentPipeline) -> None:
        self.pipeline = pipeline

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        if len(request.prompts) != len(request.completions):
            raise InvalidRequestError(
                f"{len(request.prompts)} prompts but {len(request.completions)} completions", param="completions"
            )
        scores = await self.pipeline.scorer.score(request.prompts, request.completions)
        return ScoreResponse(scorer=self.pipeline.scorer.model_id, scores=scores)

    async def correct(self, request: CorrectRequest) -> CorrectResponse:
        items = [
            CorrectionInput(
                question=item.question if isinstance(item.question, str) else [m.to_core() for m in item.question],
                answer=item.answer,
            )
            for item in request.items
        ]
        # Items in, verdicts out: a text still above the threshold is reported ``flagged``
        # with its correction (never swapped for the block message), and a failure is an error.
        config = PolicyConfig(mode=request.mode, threshold=request.threshold, block=False, failure_policy="fail_closed")
        outcomes = await self.pipeline.align(items, config)
        return CorrectResponse(
            corrector=self.pipeline.corrector.model_id,
            scorer=self.pipeline.scorer.model_id,
            threshold=self.pipeline.threshold(config),
            items=[
                CorrectedItem(correction=o.text, status=o.status, cost_before=o.cost_before, cost_after=o.cost_after)
                for o in outcomes
            ],
            corrector_usage=TokenUsage.of_corrector(outcomes),
        )
