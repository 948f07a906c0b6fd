"""The FastAPI application: lifespan, middleware and the one place errors become HTTP.

``create_app`` starts listening at once and loads the models in a worker
thread; ``/health`` answers immediately, ``/ready`` once the models are in.
Tests pass ready-made :class:`~aligner_proxy.server.wiring.Components` (fakes, tiny
models) instead of a loader.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from aligner_proxy import __version__
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.server.errors import AlignerProxyError, AuthenticationError, from_core
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.middleware import AdmissionLimit, route_label, route_paths
from aligner_proxy.server.openapi import install as install_openapi
from aligner_proxy.server.protocol import ErrorBody, ErrorResponse
from aligner_proxy.server.settings import Settings
from aligner_proxy.server.wiring import Components, build_components

logger = logging.getLogger(__name__)

Loader = Callable[[Settings, Metrics], Components]


def error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=error_type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _matches(token: bytes, keys: list[SecretStr]) -> bool:
    """Whether ``token`` is one of ``keys``, in constant time per key."""
    return any(hmac.compare_digest(token, key.get_secret_value().encode()) for key in keys)


def _from_exception(exc: AlignerProxyError) -> JSONResponse:
    return error_response(
        exc.status_code, exc.message, exc.error_type, param=exc.param, code=exc.code, headers=exc.headers
    )


class AppState:
    """What the routes need from the app: settings, metrics, and the components once loaded."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.components: Components | None = None
        self.load_error: str | None = None


def create_app(
    settings: Settings,
    components: Components | None = None,
    *,
    loader: Loader = build_components,
    metrics: Metrics | None = None,
) -> FastAPI:
    state = AppState(settings, metrics or Metrics())
    state.components = components

    async def load() -> None:
        try:
            state.components = await asyncio.to_thread(loader, settings, state.metrics)
            logger.info("ready")
        except Exception as exc:
            logger.exception("loading the models failed")
            state.load_error = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncGenerator[None, None]:
        task = asyncio.create_task(load()) if state.components is None else None
        yield
        if task is not None:
            task.cancel()
        if state.components is not None:
            await state.components.aclose()

    app = FastAPI(title="aligner-proxy", version=__version__, lifespan=lifespan)
    app.state.proxy = state

    @functools.cache
    def served() -> frozenset[str]:  # the routes are all added by the time the first request comes
        return route_paths(app.routes)

    # Inside the request-context middleware (added after it, so it runs within): a 429 still
    # gets its request id and its metrics label.
    app.add_middleware(
        AdmissionLimit, max_in_flight=settings.max_concurrent_requests, retry_after_s=settings.retry_after_s
    )

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or f"req-{uuid.uuid4().hex[:16]}"
        request.state.request_id = request_id
        headers = {"x-request-id": request_id}
        given = request.headers.get("authorization", "")
        # Bytes, not str: compare_digest refuses non-ASCII text, and a header can carry any.
        token = (given[7:] if given.lower().startswith("bearer ") else "").encode("utf-8", "surrogateescape")
        request.state.may_relax = not settings.policy_floor or _matches(token, settings.policy_override_keys)
        if settings.api_keys and request.url.path.startswith("/v1/"):
            if not _matches(token, settings.api_keys):
                exc = AuthenticationError("Incorrect or missing API key: send 'Authorization: Bearer <key>'.")
                response: Response = error_response(401, exc.message, exc.error_type, code=exc.code, headers=headers)
                labels = {"endpoint": route_label(request.url.path, served()), "status_code": "401"}
                state.metrics.requests.labels(**labels).inc()
                return response
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            response = error_response(
                413,
                f"Request body of {declared} bytes exceeds the limit of {settings.max_body_bytes} bytes.",
                "invalid_request_error",
                code="request_too_large",
                headers=headers,
            )
        else:
            response = await call_next(request)
        response.headers["x-request-id"] = request_id
        endpoint = route_label(request.url.path, served())
        state.metrics.requests.labels(endpoint=endpoint, status_code=str(response.status_code)).inc()
        return response

    @app.exception_handler(AlignerProxyError)
    @app.exception_handler(AlignmentError)
    async def on_proxy_error(_request: Request, exc: Exception) -> JSONResponse:
        error = from_core(exc)
        assert error is not None  # registered only for the types from_core maps
        return _from_exception(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
        return error_response(
            400,
            f"{loc or 'request'}: {first.get('msg', 'invalid request')}",
            "invalid_request_error",
            param=loc or None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), error_type, code=code)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        logger.error("request %s: unhandled %s", request_id, type(exc).__name__, exc_info=exc)
        # Close the connection: the request may have left it in any state, and a client's next
        # request on a kept-alive socket would fail without saying why.
        return error_response(
            500, f"Internal error (request id {request_id}).", "server_error", headers={"connection": "close"}
        )

    from aligner_proxy.server.routes import router

    app.include_router(router)
    install_openapi(app)
    return app
