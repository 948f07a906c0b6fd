"""Builds the core and the proxy's components from the settings.

This is where the settings become objects: the model pool (so an upstream and
a corrector on the same base load it once), the one worker thread all
in-process model work runs on, the corrector, the scorer, the upstreams.
Model loading is blocking and slow (seconds to minutes), so the app calls
:func:`build_components` in a worker thread after it starts listening;
``/ready`` turns 200 when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aligner_proxy.core.corrector import Corrector
from aligner_proxy.core.generation import GenerationParams, TextGenerator
from aligner_proxy.core.microbatch import model_executor
from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from aligner_proxy.core.policy import AlignmentPipeline, AsyncScorer, PolicyConfig
from aligner_proxy.core.prompt import AlignerTemplate
from aligner_proxy.core.scorer import CostScorer
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.service import ProxyService, Route
from aligner_proxy.server.settings import RouteSettings, Settings
from aligner_proxy.server.upstream import EmbeddedUpstream, OpenAIUpstream, Upstream
from aligner_proxy.weights import resolve_shipped

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a running proxy holds; :meth:`aclose` releases it."""

    service: ProxyService
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


class _Loader:
    """Loads each model once, sharing bases and the worker thread."""

    def __init__(self, settings: Settings) -> None:
        from aligner_proxy.core.models import ModelPool

        self.settings = settings
        self.executor: Executor = model_executor()
        self.pool = ModelPool()
        self.batch_kw: dict[str, Any] = {
            "max_batch_size": settings.max_batch_size,
            "batch_wait_ms": settings.batch_wait_ms,
        }

    def local_generator(self, spec: str, adapter: str | None = None) -> Any:
        from aligner_proxy.core.backends.transformers import TransformersGenerator

        return TransformersGenerator.load(
            spec,
            cache_dir=self.settings.cache_dir,
            dtype=self.settings.dtype,
            adapter=resolve_shipped(adapter) if adapter else None,
            pool=self.pool,
            executor=self.executor,
            model_id=adapter,
            **self.batch_kw,
        )

    def corrector_generator(self) -> TextGenerator:
        s = self.settings
        if s.corrector_backend == "remote":
            from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator

            assert s.corrector_url is not None  # checked by Settings
            return RemoteCompletionsGenerator(
                s.corrector_url,
                s.corrector_model,
                api_key=s.corrector_api_key.get_secret_value() if s.corrector_api_key else None,
            )
        if s.corrector_backend == "vllm":
            from aligner_proxy.core.backends.vllm import VLLMGenerator

            adapter = s.corrector_adapter_spec()
            return VLLMGenerator.load(
                s.corrector_model, cache_dir=s.cache_dir, adapter=resolve_shipped(adapter) if adapter else None
            )
        return self.local_generator(s.corrector_model, s.corrector_adapter_spec())  # type: ignore[no-any-return]

    def scorer(self) -> CostScorer:
        return load_cost_scorer(self.settings.scorer, cache_dir=self.settings.cache_dir)

    def upstream(self, route: RouteSettings) -> Upstream:
        s = self.settings
        if route.upstream.embedded:
            return EmbeddedUpstream(
                self.local_generator(route.upstream.model),
                default_max_tokens=s.embedded_max_tokens,
                repetition_penalty=s.embedded_repetition_penalty,
            )
        assert route.upstream.base_url is not None
        return OpenAIUpstream(
            route.upstream.base_url,
            api_key=route.upstream.resolved_api_key(),
            timeout_s=s.upstream_timeout_s,
            connect_timeout_s=s.upstream_connect_timeout_s,
            retries=s.upstream_retries,
            retry_deadline_s=s.upstream_retry_deadline_s,
        )


def load_cost_scorer(spec: str, *, cache_dir: Path = DEFAULT_CACHE_DIR, max_length: int = 512) -> CostScorer:
    """A cost scorer by name: ``heuristic``, a shipped scorer, an embedding-head directory, or a classifier.

    The proxy's gate, the batch corrector and the evals' judges all resolve a
    scorer here, so one spelling means the same model everywhere.
    ``max_length`` applies to sequence classifiers (an embedding head keeps the
    length it was trained with).
    """
    if spec == "heuristic":
        from aligner_proxy.core.heuristic import KeywordCostScorer

        return KeywordCostScorer()
    path = resolve_shipped(spec)
    if (Path(path) / "head_config.json").is_file():
        from aligner_proxy.core.backends.embedding import EmbeddingHeadScorer

        return EmbeddingHeadScorer.load(path, cache_dir=cache_dir, model_id=spec)
    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer

    return SequenceClassifierScorer.load(spec, cache_dir=cache_dir, max_length=max_length)


def policy_config(route: RouteSettings) -> PolicyConfig:
    a = route.aligner
    return PolicyConfig(
        mode=a.mode,
        threshold=a.threshold,
        block=a.block,
        block_message=a.block_message,
        failure_policy=a.failure_policy,
    )


def make_pipeline(settings: Settings, *, scorer: CostScorer, corrector_generator: TextGenerator) -> AlignmentPipeline:
    """The core policy over a scorer and a corrector generator (also what tests use with fakes).

    The scorer's batcher gets a worker thread of its own rather than the
    generators' one: a generation batch holds that thread for as long as it
    decodes (tens of seconds for a 256-token correction on CPU), and a scoring
    call of a few milliseconds queued behind it would make every gated request
    wait for other requests' corrections. The brief overlap of two torch calls
    on the same cores costs far less than that.
    """
    corrector = Corrector(
        corrector_generator,
        template=AlignerTemplate(settings.corrector_template),
        params=GenerationParams(max_new_tokens=settings.corrector_max_new_tokens),
        max_question_tokens=settings.corrector_max_question_tokens,
        max_answer_tokens=settings.corrector_max_answer_tokens,
    )
    batch_kw: dict[str, Any] = {"max_batch_size": settings.max_batch_size * 4, "max_wait_ms": settings.batch_wait_ms}
    return AlignmentPipeline(AsyncScorer(scorer, batch_kw), corrector, timeout_s=settings.alignment_timeout_s)


def assemble(
    settings: Settings, metrics: Metrics, *, pipeline: AlignmentPipeline, upstreams: dict[str, Upstream]
) -> Components:
    """Wire a pipeline and one upstream per route into the service."""
    routes = [
        Route(
            name=r.name,
            upstream=upstreams[r.name],
            upstream_model=r.name if r.upstream.embedded else r.upstream.model,
            policy=policy_config(r),
        )
        for r in settings.routes()
    ]
    service = ProxyService(routes, pipeline, metrics, keepalive_s=settings.keepalive_interval_s)
    closers: list[Callable[[], Awaitable[None]]] = [u.aclose for u in upstreams.values()]
    closers.append(pipeline.aclose)
    return Components(service=service, closers=closers)


def load_pipeline(settings: Settings, loader: _Loader | None = None) -> AlignmentPipeline:
    """Load the scorer and the corrector the settings name (blocking): the core without a proxy."""
    loader = loader or _Loader(settings)
    logger.info("loading scorer %s and corrector %s", settings.scorer, settings.corrector_model)
    return make_pipeline(settings, scorer=loader.scorer(), corrector_generator=loader.corrector_generator())


def build_components(settings: Settings, metrics: Metrics) -> Components:
    """Load every model the settings name (blocking) and wire the service."""
    loader = _Loader(settings)
    pipeline = load_pipeline(settings, loader)
    upstreams = {route.name: loader.upstream(route) for route in settings.routes()}
    logger.info("models loaded: %s", ", ".join(upstreams))
    return assemble(settings, metrics, pipeline=pipeline, upstreams=upstreams)
