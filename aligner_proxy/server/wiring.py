"""Builds the proxy's components from the settings: the core pipeline, one upstream per route, the serving classes.

The core's models load through :mod:`aligner_proxy.core.loading` (one
:class:`~aligner_proxy.core.loading.ModelLoader`, so an embedded upstream and a
corrector on the same base load it once and share the one worker thread);
this module adds what only a server has: upstreams and routes. Model loading
is blocking and slow (seconds to minutes), so the app calls
:func:`build_components` in a worker thread after it starts listening;
``/ready`` turns 200 when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aligner_proxy.core.loading import ModelLoader, load_pipeline
from aligner_proxy.core.policy import AlignmentPipeline
from aligner_proxy.core.transport import make_transport
from aligner_proxy.server.audit import AuditSink
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.serving.aligner import AlignerServing
from aligner_proxy.server.serving.base import Route, ServedModels
from aligner_proxy.server.serving.chat import ChatServing
from aligner_proxy.server.serving.completions import CompletionServing
from aligner_proxy.server.serving.guardrail import GuardrailServing, QuestionMemory
from aligner_proxy.server.settings import RouteSettings, Settings
from aligner_proxy.server.upstream import UPSTREAM_MAX_CONNECTIONS, EmbeddedUpstream, OpenAIUpstream, Upstream

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a running proxy holds: the served models, the pipeline, one serving object per
    endpoint; :meth:`aclose` releases it."""

    models: ServedModels
    pipeline: AlignmentPipeline
    chat: ChatServing
    completions: CompletionServing
    aligner: AlignerServing
    guardrail: GuardrailServing
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def audit_to(self, sink: AuditSink) -> None:
        """Send one row per checked answer of every generating endpoint and guardrail check to ``sink``
        (the audit log)."""
        self.chat.annotator.audit = sink
        self.completions.annotator.audit = sink
        self.guardrail.annotator.audit = sink

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def build_upstream(settings: Settings, route: RouteSettings, loader: ModelLoader | None = None) -> Upstream:
    """A route's upstream: the embedded model (loaded through the core's loader) or an OpenAI-compatible URL."""
    if route.upstream.embedded:
        if loader is None:
            raise ValueError(f"route {route.name!r} has an embedded upstream: it needs a model loader")
        return EmbeddedUpstream(
            loader.local_generator(route.upstream.model),
            default_max_tokens=settings.embedded_max_tokens,
            repetition_penalty=settings.embedded_repetition_penalty,
        )
    assert route.upstream.base_url is not None
    return OpenAIUpstream(
        route.upstream.base_url,
        api_key=route.upstream.resolved_api_key(),
        timeout_s=settings.upstream_timeout_s,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        retries=settings.upstream_retries,
        retry_deadline_s=settings.upstream_retry_deadline_s,
        deadline_s=settings.upstream_deadline_s,
        max_bytes=settings.upstream_max_bytes,
        transport=make_transport(settings.upstream_transport, max_connections=UPSTREAM_MAX_CONNECTIONS),
    )


def assemble(
    settings: Settings, metrics: Metrics, *, pipeline: AlignmentPipeline, upstreams: dict[str, Upstream]
) -> Components:
    """Wire a pipeline and one upstream per route into the serving classes."""
    models = ServedModels(
        [
            Route(
                name=r.name,
                upstream=upstreams[r.name],
                upstream_model=r.name if r.upstream.embedded else r.upstream.model,
                policy=r.aligner.to_config(),
            )
            for r in settings.routes()
        ]
    )
    closers: list[Callable[[], Awaitable[None]]] = [u.aclose for u in upstreams.values()]
    closers.append(pipeline.aclose)
    return Components(
        models=models,
        pipeline=pipeline,
        chat=ChatServing(models, pipeline, metrics, keepalive_s=settings.keepalive_interval_s),
        completions=CompletionServing(models, pipeline, metrics, keepalive_s=settings.keepalive_interval_s),
        aligner=AlignerServing(pipeline),
        guardrail=GuardrailServing(
            models,
            pipeline,
            metrics,
            questions=QuestionMemory(settings.guardrail_questions, settings.guardrail_question_ttl_s),
            max_answers=settings.max_answers_per_request,
        ),
        closers=closers,
    )


def build_components(settings: Settings, metrics: Metrics) -> Components:
    """Load every model the settings name (blocking) and wire the serving classes."""
    core = settings.core_config()
    loader = ModelLoader(core)
    pipeline = load_pipeline(core, loader)
    upstreams = {route.name: build_upstream(settings, route, loader) for route in settings.routes()}
    logger.info("models loaded: %s", ", ".join(upstreams))
    return assemble(settings, metrics, pipeline=pipeline, upstreams=upstreams)
