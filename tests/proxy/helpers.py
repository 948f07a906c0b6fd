"""Build the proxy over fakes: its components, its app, or the app served on a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from aligner_proxy.core.loading import make_pipeline
from aligner_proxy.server.app import create_app
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.settings import Settings
from aligner_proxy.server.upstream import EmbeddedUpstream, Upstream
from aligner_proxy.server.wiring import Components, assemble, build_upstream
from tests.proxy.fakes import FakeCorrectorGenerator, FakeScorer, serve

MODEL = "fake-model"


def proxy_components(
    upstream_url: str = "http://unused",
    *,
    scorer: Any | None = None,
    generator: Any | None = None,
    upstream: Upstream | None = None,
    **settings: Any,
) -> tuple[Settings, Components, Metrics]:
    """The proxy's components over fakes, wired as ``aligner-proxy serve`` wires them, and no app."""
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
        route.name: upstream or build_upstream(config, route)  # the settings' timeouts, deadlines, retries
    }
    return config, assemble(config, metrics, pipeline=pipeline, upstreams=upstreams), metrics


def proxy_app(upstream_url: str, **kw: Any) -> Any:
    config, components, metrics = proxy_components(upstream_url, **kw)
    return create_app(config, components, metrics=metrics)


@contextmanager
def running_proxy(upstream_url: str, **kw: Any) -> Iterator[str]:
    with serve(proxy_app(upstream_url, **kw)) as url:
        yield url


async def collect(events: AsyncIterator[str]) -> list[str]:
    """Every SSE event of a stream, as sent."""
    return [event async for event in events]


def data(events: list[str]) -> list[Any]:
    """The ``data:`` payloads of ``events``, parsed (``[DONE]`` stays a string); comments are left out."""
    payloads = [event.removeprefix("data: ").rstrip("\n") for event in events if event.startswith("data: ")]
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in payloads]
