"""ASGI pieces that sit in front of every route: admission control and the route label for metrics.

Admission is a plain ASGI middleware rather than a FastAPI ``@app.middleware``
function because it must hold its slot until the response has been *sent*:
a streamed answer is still running long after the route returned its
``StreamingResponse``, and an HTTP middleware function only sees the latter.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from aligner_proxy.server.protocol import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)

UNMATCHED = "unmatched"


def route_paths(routes: list[Any]) -> frozenset[str]:
    """Every path an app serves, routers included (FastAPI may wrap an included router in a route of its own)."""
    paths: set[str] = set()
    for route in routes:
        if isinstance(getattr(route, "path", None), str):
            paths.add(route.path)
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if isinstance(inner, list) and inner is not routes:
            paths |= route_paths(inner)
    return frozenset(paths)


def route_label(path: str, served: frozenset[str]) -> str:
    """The metrics label of a request: its path when the app serves it, else ``unmatched``. Never the raw
    path of an unknown request: a label per raw path would let any client create series without bound.
    (Every route of this app is a fixed path; one with path parameters would read ``unmatched``.)"""
    return path if path in served else UNMATCHED


class AdmissionLimit:
    """At most ``max_in_flight`` requests under ``prefix`` run at once; the next gets a 429 with ``Retry-After``.

    Health, readiness and metrics stay outside the limit so an overloaded proxy can still say so."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        retry_after_s: int = 1,
        prefix: str = "/v1/",
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.prefix = prefix
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await self._reject(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _reject(self, send: Send) -> None:
        error = ErrorBody(
            message=f"The proxy is at its limit of {self.max_in_flight} concurrent requests; "
            f"retry after {self.retry_after_s} s.",
            type="rate_limit_error",
            code="too_many_requests",
        )
        body = ErrorResponse(error=error).model_dump_json().encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after_s).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
