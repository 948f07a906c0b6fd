"""Build a proxy app over fakes and serve it on a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aligner_proxy.core.loading import make_pipeline
from aligner_proxy.server.app import create_app
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.settings import Settings
from aligner_proxy.server.upstream import EmbeddedUpstream, OpenAIUpstream, Upstream
from aligner_proxy.server.wiring import assemble
from tests.proxy.fakes import FakeCorrectorGenerator, FakeScorer, serve

MODEL = "fake-model"


def proxy_app(
    upstream_url: str,
    *,
    scorer: Any | None = None,
    generator: Any | None = None,
    upstream: Upstream | None = None,
    **settings: Any,
) -> Any:
    aligner = settings.pop("aligner", {})
    config = Settings(
        served_model_name=MODEL,
        upstream={"model": "embedded-fake"}
        if isinstance(upstream, EmbeddedUpstream)
        else {"base_url": upstream_url + "/v1", "model": "up-model"},
        aligner=aligner,
        keepalive_interval_s=settings.pop("keepalive_interval_s", 0.05),
        upstream_retries=settings.pop("upstream_retries", 1),
        **settings,
    )
    metrics = Metrics()
    pipeline = make_pipeline(
        config.core_config(), scorer=scorer or FakeScorer(), corrector_generator=generator or FakeCorrectorGenerator()
    )
    route = config.routes()[0]
    upstreams: dict[str, Upstream] = {
        route.name: upstream or OpenAIUpstream(route.upstream.base_url or "", retries=config.upstream_retries)
    }
    components = assemble(config, metrics, pipeline=pipeline, upstreams=upstreams)
    return create_app(config, components, metrics=metrics)


@contextmanager
def running_proxy(upstream_url: str, **kw: Any) -> Iterator[str]:
    with serve(proxy_app(upstream_url, **kw)) as url:
        yield url
