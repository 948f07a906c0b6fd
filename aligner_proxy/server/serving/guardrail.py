"""``/v1/beta/litellm_basic_guardrail_api``: the proxy as a guardrail of a LiteLLM gateway.

LiteLLM's Generic Guardrail API (``guardrail: generic_guardrail_api``, read from LiteLLM 1.106.2)
posts the texts of a request or of an answer to ``<api_base>/beta/litellm_basic_guardrail_api``
and applies the action it gets back. With ``api_base`` set to this proxy's ``/v1``, a LiteLLM
user's answers are scored and corrected by the same pipeline and route policy as the proxy's
own, and LiteLLM is told:

- ``NONE``: every answer passed (or the mode is ``off``, or the route failed open);
- ``GUARDRAIL_INTERVENED`` with ``texts``: at least one answer was corrected; the texts replace
  the ones LiteLLM sent, in order;
- ``BLOCKED`` with the route's block message: an answer is still above the threshold with
  ``block`` on. LiteLLM cannot block one choice of several, so the whole call fails.

A failure under ``fail_closed`` is a 503, which LiteLLM fails the call on (its default).

LiteLLM's post_call sends the answer's texts but not the request's messages; its pre_call sends
the messages, and both carry the same ``litellm_call_id``. So a ``request`` check is answered
``NONE`` (the proxy corrects answers, not prompts) and remembers the messages, for a bounded
time and number, as the question of the ``response`` check with the same id. An answer whose
question is unknown (a guardrail configured for post_call alone, or the two checks served by
different ``--workers`` processes) is scored and corrected without one.
"""

from __future__ import annotations

import logging

from cachetools import TTLCache

from aligner_proxy.core.corrector import CorrectionInput, question_text
from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.policy import AlignmentPipeline, Outcome, PolicyConfig
from aligner_proxy.server.errors import InvalidRequestError
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.protocol import GuardrailParams, GuardrailRequest, GuardrailResponse
from aligner_proxy.server.serving.base import ServedModels, Serving

logger = logging.getLogger(__name__)


class QuestionMemory:
    """The messages of pre_call checks waiting for their post_call, by LiteLLM call id: at most
    ``size`` of them (the oldest go first), each for at most ``ttl_s`` seconds. A call whose
    post_call never comes (an upstream error, a pre_call-only guardrail) costs a slot until then."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self._questions: TTLCache[str, list[ChatMessage]] = TTLCache(maxsize=size, ttl=ttl_s)

    def remember(self, call_id: str, messages: list[ChatMessage]) -> None:
        self._questions[call_id] = messages

    def recall(self, call_id: str) -> list[ChatMessage] | None:
        """The call's messages, forgotten as they are read: each post_call is checked once."""
        return self._questions.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._questions)


def verdict(outcomes: list[Outcome], config: PolicyConfig) -> GuardrailResponse:
    """LiteLLM's action for the outcomes of one answer's texts."""
    if any(outcome.status == "blocked" for outcome in outcomes):
        return GuardrailResponse(action="BLOCKED", blocked_reason=config.block_message)
    if any(outcome.text != outcome.original for outcome in outcomes):
        return GuardrailResponse(action="GUARDRAIL_INTERVENED", texts=[outcome.text for outcome in outcomes])
    return GuardrailResponse(action="NONE")


class GuardrailServing(Serving):
    """LiteLLM guardrail checks through the alignment policy of one of the proxy's routes."""

    endpoint = "/v1/beta/litellm_basic_guardrail_api"

    def __init__(
        self,
        models: ServedModels,
        pipeline: AlignmentPipeline,
        metrics: Metrics,
        *,
        questions: QuestionMemory,
        max_answers: int,
    ) -> None:
        super().__init__(models, pipeline, metrics)
        self.questions = questions
        self.max_answers = max_answers

    async def check(self, request: GuardrailRequest, request_id: str, *, may_relax: bool = True) -> GuardrailResponse:
        """Answer one check. The route and options are resolved for a ``request`` check too, so a
        wrong guardrail config fails at the first call rather than at the first answer."""
        params = request.additional_provider_specific_params or GuardrailParams()
        route = params.route or next(iter(self.models.routes))
        routed = self.route(route, params.aligner, request_id, may_relax=may_relax)
        if request.input_type == "request":
            if request.litellm_call_id and request.structured_messages:
                self.questions.remember(request.litellm_call_id, [m.to_core() for m in request.structured_messages])
            return self._counted(request, GuardrailResponse(action="NONE"))
        texts = request.texts or []
        if len(texts) > self.max_answers:
            raise InvalidRequestError(
                f"{len(texts)} texts exceed the limit of {self.max_answers} answers per request", param="texts"
            )
        question = self._question(request, request_id)
        items = [CorrectionInput(question=question, answer=text) for text in texts]
        asked = question_text(question)  # what the scorer sees, and the audit log records
        prompts = [asked] * len(texts)
        outcomes = await self.pipeline.align(items, routed.config, score_prompts=prompts, request_id=request_id)
        response = verdict(outcomes, routed.config)
        response.aligner = self.annotator.annotate(
            routed,
            dict(enumerate(outcomes)),
            len(texts),
            upstream_ms=0.0,
            questions=dict.fromkeys(range(len(texts)), asked),
        )
        return self._counted(request, response)

    def _question(self, request: GuardrailRequest, request_id: str) -> str | list[ChatMessage]:
        """What the answer answers: the messages sent with it, else those its pre_call left, else nothing."""
        if request.structured_messages:
            return [m.to_core() for m in request.structured_messages]
        remembered = self.questions.recall(request.litellm_call_id) if request.litellm_call_id else None
        if remembered is None:
            logger.info(
                "request %s: no question for LiteLLM call %s; checking the answer alone",
                request_id,
                request.litellm_call_id,
            )
            return ""
        return remembered

    def _counted(self, request: GuardrailRequest, response: GuardrailResponse) -> GuardrailResponse:
        self.metrics.guardrail_checks.labels(input_type=request.input_type, action=response.action).inc()
        return response
