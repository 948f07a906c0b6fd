"""The FastAPI application: lifespan, middleware and the one place errors become HTTP.

``create_app`` starts listening at once and loads the models in a worker
thread; ``/health`` answers immediately, ``/ready`` once the models are in.
Tests pass ready-made :class:`~aligner_proxy.server.wiring.Components` (fakes, tiny
models) instead of a loader. With ``audit_log`` set, the lifespan opens the
audit writer before anything is served and closes it (writing what is
queued) after the last request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from aligner_proxy import __version__
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.server.audit import AuditWriter
from aligner_proxy.server.errors import AlignerProxyError, from_core
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.middleware import AdmissionLimit, RequestContext, error_response, route_paths
from aligner_proxy.server.openapi import install as install_openapi
from aligner_proxy.server.settings import Settings
from aligner_proxy.server.wiring import Components, build_components

logger = logging.getLogger(__name__)

Loader = Callable[[Settings, Metrics], Components]


def _from_exception(exc: AlignerProxyError) -> JSONResponse:
    return error_response(
        exc.status_code, exc.message, exc.error_type, param=exc.param, code=exc.code, headers=exc.headers
    )


class AppState:
    """What the routes need from the app: settings, metrics, the components once loaded, the audit writer."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.components: Components | None = None
        self.load_error: str | None = None
        self.audit: AuditWriter | None = None


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
            loaded = await asyncio.to_thread(loader, settings, state.metrics)
            if state.audit is not None:
                loaded.audit_to(state.audit)
            state.components = loaded
            logger.info("ready")
        except Exception as exc:
            logger.exception("loading the models failed")
            state.load_error = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncGenerator[None, None]:
        if settings.audit_log is not None:
            state.audit = await asyncio.to_thread(AuditWriter.open, settings, state.metrics)
            if state.components is not None:
                state.components.audit_to(state.audit)
        task = asyncio.create_task(load()) if state.components is None else None
        yield
        if task is not None:
            task.cancel()
        if state.components is not None:
            await state.components.aclose()
        if state.audit is not None:
            await asyncio.to_thread(state.audit.close)

    app = FastAPI(title="aligner-proxy", version=__version__, lifespan=lifespan)
    app.state.proxy = state

    @functools.cache
    def served() -> frozenset[str]:  # the routes are all added by the time the first request comes
        return route_paths(app.routes)

    # Added first, so it runs inside the request context: a 429 still gets its request id and its count.
    app.add_middleware(
        AdmissionLimit, max_in_flight=settings.max_concurrent_requests, retry_after_s=settings.retry_after_s
    )
    app.add_middleware(RequestContext, settings=settings, metrics=state.metrics, served=served)

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
    if settings.ui_enabled():
        from aligner_proxy.server.ui import router as ui_router

        app.include_router(ui_router)
    install_openapi(app)
    return app


SETTINGS_ENV = "ALIGNER_SETTINGS_JSON"
"""Where ``aligner-proxy serve --workers N`` puts the resolved settings for its worker processes."""


def settings_json(settings: Settings) -> str:
    """``settings`` as JSON with their secrets in clear: only for handing them to a worker process."""
    return json.dumps(
        settings.model_dump(),
        default=lambda value: value.get_secret_value() if isinstance(value, SecretStr) else str(value),
    )


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``serve --workers N``: the settings its parent resolved."""
    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]))
