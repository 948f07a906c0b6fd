"""What every endpoint's serving class shares: the served models, the request's policy, the annotation.

A request is first *routed*: its model name picks a :class:`Route` (an
upstream and a policy), and its ``aligner`` options adjust that policy
(:meth:`~aligner_proxy.core.policy.PolicyConfig.with_overrides`). The
resulting :class:`RoutedRequest` carries everything the rest of the request
needs, so the serving classes never re-read the options.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from aligner_proxy.core.annotation import AlignerAnnotation, AlignerOptions
from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.policy import AlignmentPipeline, PolicyConfig
from aligner_proxy.server.errors import PolicyLockedError, UnknownModelError
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.protocol import ChatCompletionResponse, CompletionResponse, ModelCard, ModelList, Usage
from aligner_proxy.server.serving.annotation import Annotator, elapsed_ms
from aligner_proxy.server.upstream import Upstream


@dataclass
class Route:
    """A served model name: its upstream, the name the upstream knows it by, and its policy."""

    name: str
    upstream: Upstream
    upstream_model: str
    policy: PolicyConfig


class ServedModels:
    """The model names this proxy serves, each a :class:`Route`; ``/v1/models`` and ``/ready`` list them."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = {route.name: route for route in routes}

    def get(self, model: str) -> Route:
        try:
            return self.routes[model]
        except KeyError:
            known = ", ".join(sorted(self.routes))
            raise UnknownModelError(
                f"The model '{model}' does not exist on this proxy; available: {known}", param="model"
            ) from None

    def model_list(self) -> ModelList:
        return ModelList(data=[ModelCard(id=name) for name in self.routes])


class ChoiceQuestion(NamedTuple):
    """What a choice answers: the question the corrector sees, and the prompt the scorer sees."""

    question: str | list[ChatMessage]
    score_prompt: str


@dataclass
class RoutedRequest:
    """A request matched to its route: the policy it runs under, what it asked to see, and its clock."""

    route: Route
    config: PolicyConfig
    return_original: bool
    request_id: str
    started: float = field(default_factory=time.perf_counter)


class Serving:
    """Base of the generating endpoints' serving classes (chat, completions)."""

    endpoint: str  # the route it serves, as the audit log records it

    def __init__(self, models: ServedModels, pipeline: AlignmentPipeline, metrics: Metrics) -> None:
        self.models = models
        self.pipeline = pipeline
        self.metrics = metrics
        self.annotator = Annotator(pipeline, metrics, self.endpoint)

    def route(
        self, model: str, options: AlignerOptions | None, request_id: str, *, may_relax: bool = True
    ) -> RoutedRequest:
        """Match ``model`` to its route (404 if unknown) and apply the request's options to its policy;
        the threshold is resolved (the scorer's own by default), as the annotation reports it.
        Without ``may_relax`` (the policy floor), options may only make the policy stricter: a 403 says
        which one would have relaxed it."""
        route = self.models.get(model)
        if options is None:  # most requests: the route's own policy, nothing to merge or check
            return RoutedRequest(route, self.pipeline.resolve(route.policy), False, request_id)
        config = self.pipeline.resolve(
            route.policy.with_overrides(
                mode=options.mode,
                threshold=options.threshold,
                block=options.block,
                failure_policy=options.failure_policy,
            )
        )
        if not may_relax and (relaxed := self.pipeline.resolve(route.policy).relaxed_by(config)):
            field, change = next(iter(relaxed.items()))
            raise PolicyLockedError(
                f"This proxy does not let clients relax model '{model}''s policy ({field}: {change}).",
                param=f"aligner.{field}",
            )
        return RoutedRequest(route, config, options.return_original, request_id)

    def upstream_answered(self, routed: RoutedRequest, usage: Usage | None) -> float:
        """The upstream's time so far, in ms; its token usage is counted in the metrics."""
        if usage is not None:
            self.metrics.count_tokens("upstream", usage.prompt_tokens, usage.completion_tokens)
        return elapsed_ms(routed.started)

    async def align_response(
        self,
        routed: RoutedRequest,
        response: ChatCompletionResponse | CompletionResponse,
        asked: Callable[[int], ChoiceQuestion],
    ) -> AlignerAnnotation:
        """Align a whole response in place: each choice with text gets the policy's text (``asked``
        says what choice ``index`` answers), a blocked one finishes with ``content_filter``.
        Returns its annotation."""
        upstream_ms = self.upstream_answered(routed, response.usage)
        choices, items, prompts = [], [], []
        for choice in response.choices:
            text = choice.alignable_text()
            if text is not None:
                question = asked(choice.index)
                choices.append(choice)
                items.append(CorrectionInput(question=question.question, answer=text))
                prompts.append(question.score_prompt)
        outcomes = await self.pipeline.align(items, routed.config, score_prompts=prompts, request_id=routed.request_id)
        for choice, outcome in zip(choices, outcomes, strict=True):
            choice.replace_text(outcome.text)
            if outcome.status == "blocked":
                choice.finish_reason = "content_filter"
        aligned = {choice.index: outcome for choice, outcome in zip(choices, outcomes, strict=True)}
        asked_by = {choice.index: prompt for choice, prompt in zip(choices, prompts, strict=True)}
        return self.annotator.annotate(
            routed, aligned, len(response.choices), upstream_ms=upstream_ms, questions=asked_by
        )
