"""ASGI pieces that sit in front of every route: the request context (id, keys, size, metrics) and admission.

Both are plain ASGI middleware rather than FastAPI ``@app.middleware``
functions. Admission must hold its slot until the response has been *sent*: a
streamed answer is still running long after the route returned its
``StreamingResponse``, and an HTTP middleware function only sees the latter.
And an HTTP middleware function runs the app in a task of its own and copies
every response through a stream: on a proxy whose whole job is one hop, that
was a measurable share of each request's CPU.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aligner_proxy.server.errors import AuthenticationError
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.protocol import ErrorBody, ErrorResponse
from aligner_proxy.server.settings import Settings

UNMATCHED = "unmatched"
KEYED_PREFIXES = ("/v1/", "/ui/api/")
"""The paths that need a key when keys are set: the API, and the review page's data (its page is static)."""


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


def error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``."""
    body = ErrorResponse(error=ErrorBody(message=message, type=error_type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def keys_match(token: bytes, keys: list[SecretStr]) -> bool:
    """Whether ``token`` is one of ``keys``, in constant time per key (bytes: a header can carry any text)."""
    return any(hmac.compare_digest(token, key.get_secret_value().encode()) for key in keys)


class RequestContext:
    """What every HTTP request gets: an id (``x-request-id``, the client's or a new one), the key
    (``Authorization: Bearer``, else ``x-api-key``) checked for ``/v1/`` and ``/ui/api/`` routes (401), a
    declared body size checked (413), whether it may relax a policy (the policy floor), and one count in
    ``/metrics`` by route and status."""

    def __init__(
        self, app: ASGIApp, *, settings: Settings, metrics: Metrics, served: Callable[[], frozenset[str]]
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id") or f"req-{uuid.uuid4().hex[:16]}"
        given = headers.get("authorization", "")
        bearer = given[7:] if given.lower().startswith("bearer ") else ""
        # LiteLLM's generic guardrail sends its api_key as x-api-key (Anthropic's header), never as a bearer.
        token = (bearer or headers.get("x-api-key", "")).encode("utf-8", "surrogateescape")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["may_relax"] = not settings.policy_floor or keys_match(token, settings.policy_override_keys)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        path = scope["path"]
        declared = headers.get("content-length")
        try:
            if settings.api_keys and path.startswith(KEYED_PREFIXES) and not keys_match(token, settings.api_keys):
                exc = AuthenticationError(
                    "Incorrect or missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
                )
                await error_response(401, exc.message, exc.error_type, code=exc.code)(scope, receive, send_with_id)
            elif declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
                message = f"Request body of {declared} bytes exceeds the limit of {settings.max_body_bytes} bytes."
                response = error_response(413, message, "invalid_request_error", code="request_too_large")
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.requests.labels(endpoint=route_label(path, self.served()), status_code=str(status)).inc()


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
            await self._reject(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, wait = self.max_in_flight, self.retry_after_s
        message = f"The proxy is at its limit of {limit} concurrent requests; retry after {wait} s."
        response = error_response(
            429, message, "rate_limit_error", code="too_many_requests", headers={"retry-after": str(self.retry_after_s)}
        )
        await response(scope, receive, send)
