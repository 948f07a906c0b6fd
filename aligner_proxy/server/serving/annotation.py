"""The ``aligner`` annotation of an answer, the headers that repeat it, and the metrics that count it.

One place turns the pipeline's :class:`~aligner_proxy.core.policy.Outcome`\\ s
into what a client reads — the annotation on a whole response or on a
stream's last chunk, and ``x-aligner-status`` — so whole and streamed
answers report the same fields the same way. Every checked answer of every
generating endpoint passes here, so this is also where the audit log gets its
one row per answer (when it is on).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aligner_proxy.core.annotation import AlignerAnnotation, ChoiceAnnotation, Timings, TokenUsage
from aligner_proxy.core.audit import AuditRecord, clip
from aligner_proxy.core.policy import AlignmentPipeline, Outcome
from aligner_proxy.server.metrics import Metrics

if TYPE_CHECKING:
    from aligner_proxy.server.audit import AuditSink
    from aligner_proxy.server.serving.base import RoutedRequest


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a :func:`time.perf_counter` reading)."""
    return (time.perf_counter() - started) * 1000.0


def aligner_headers(annotation: AlignerAnnotation | None) -> dict[str, str]:
    """The headers of an annotated JSON answer: ``x-aligner-status``, the first choice's status."""
    return {"x-aligner-status": annotation.status} if annotation else {}


class Annotator:
    """Builds an answer's annotation from its outcomes, counts them in the metrics, and sends each to the
    audit log when one is attached (``audit``; :meth:`~aligner_proxy.server.wiring.Components.audit_to`)."""

    def __init__(self, pipeline: AlignmentPipeline, metrics: Metrics, endpoint: str) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.endpoint = endpoint
        self.audit: AuditSink | None = None

    def annotate(
        self,
        routed: RoutedRequest,
        outcomes: Mapping[int, Outcome],
        n_choices: int,
        *,
        upstream_ms: float,
        questions: Mapping[int, str],
    ) -> AlignerAnnotation:
        """The annotation of an answer with ``n_choices`` choices; a choice without an outcome
        (a tool call, an empty answer) had nothing to align and is ``skipped``. ``questions`` holds
        what each choice with an outcome answers (the scorer's prompt), for the audit log."""
        config, return_original = routed.config, routed.return_original
        choices = []
        for index in range(n_choices):
            outcome = outcomes.get(index)
            if outcome is None:
                choices.append(ChoiceAnnotation(index=index, status="skipped"))
                continue
            choices.append(
                ChoiceAnnotation(
                    index=index,
                    status=outcome.status,
                    cost_before=outcome.cost_before,
                    cost_after=outcome.cost_after,
                    original=outcome.original if return_original else None,
                    error=outcome.error,
                )
            )
            self.metrics.statuses.labels(model=routed.route.name, status=outcome.status).inc()
        done = list(outcomes.values())
        timings = Timings(
            upstream_ms=upstream_ms,
            scorer_ms=max((o.scorer_ms for o in done), default=0.0),
            corrector_ms=max((o.corrector_ms for o in done), default=0.0),
            total_ms=elapsed_ms(routed.started),
        )
        usage = TokenUsage.of_corrector(done)
        self._count(timings, usage)
        if self.audit is not None:
            self._audit(routed, outcomes, questions, timings)
        first = choices[0] if choices else ChoiceAnnotation(index=0, status="skipped")
        aligned = config.mode != "off"
        return AlignerAnnotation(
            status=first.status,
            mode=config.mode,
            threshold=config.threshold,
            cost_before=first.cost_before,
            cost_after=first.cost_after,
            original=first.original,
            scorer=self.pipeline.scorer.model_id if aligned else None,
            corrector=self.pipeline.corrector.model_id if aligned else None,
            timings=timings,
            corrector_usage=usage,
            choices=choices,
        )

    def _audit(
        self, routed: RoutedRequest, outcomes: Mapping[int, Outcome], questions: Mapping[int, str], timings: Timings
    ) -> None:
        assert self.audit is not None
        now = time.time()
        for index, outcome in outcomes.items():
            self.audit.submit(
                AuditRecord(
                    time=now,
                    request_id=routed.request_id,
                    endpoint=self.endpoint,
                    model=routed.route.name,
                    choice=index,
                    mode=routed.config.mode,
                    status=outcome.status,
                    threshold=routed.config.threshold,
                    cost_before=outcome.cost_before,
                    cost_after=outcome.cost_after,
                    question=clip(questions.get(index, "")),
                    original=clip(outcome.original),
                    final=clip(outcome.text),
                    upstream_ms=timings.upstream_ms,
                    scorer_ms=outcome.scorer_ms,
                    corrector_ms=outcome.corrector_ms,
                    total_ms=timings.total_ms,
                    corrector_prompt_tokens=outcome.corrector_prompt_tokens,
                    corrector_completion_tokens=outcome.corrector_completion_tokens,
                    error=outcome.error,
                )
            )

    def _count(self, timings: Timings, usage: TokenUsage) -> None:
        for stage, ms in (
            ("upstream", timings.upstream_ms),
            ("scorer", timings.scorer_ms),
            ("corrector", timings.corrector_ms),
            ("total", timings.total_ms),
        ):
            if ms:
                self.metrics.observe_ms(stage, ms)
        self.metrics.count_tokens("corrector", usage.prompt_tokens, usage.completion_tokens)
