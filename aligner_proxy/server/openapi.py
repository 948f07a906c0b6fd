"""The OpenAPI document: every endpoint's request and response bodies, and its error answers.

The routes read their bodies themselves (bounded decoding, OpenAI-shaped 400s
instead of FastAPI's 422s), so FastAPI cannot see the request models; this
module declares them, and the error answers every ``/v1/`` route can give,
so a client generator or a schema-driven fuzzer sees the real contract.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aligner_proxy.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    CorrectRequest,
    ErrorResponse,
    GuardrailRequest,
    ScoreRequest,
)

GUARDRAIL_PATH = "/v1/beta/litellm_basic_guardrail_api"
"""LiteLLM appends ``/beta/litellm_basic_guardrail_api`` to a generic guardrail's ``api_base``
(the proxy's ``/v1``, so its keys, admission limit and metrics apply)."""

REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/aligner/score": ScoreRequest,
    "/v1/aligner/correct": CorrectRequest,
    GUARDRAIL_PATH: GuardrailRequest,
}

ERRORS = {
    "400": "invalid request",
    "401": "missing or wrong API key",
    "403": "the request would relax a locked policy",
    "404": "unknown model",
    "413": "body too large",
    "429": "too many requests in flight (see Retry-After)",
    "502": "the upstream failed",
    "503": "not ready, upstream unavailable, or the alignment stage failed closed",
    "504": "the upstream timed out",
}

_REF = "#/components/schemas/{model}"

SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "one server-sent event: data is a JSON chunk, an error object, or [DONE] (always last)",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a ``/v1/`` route: each error status with OpenAI's error body."""
    return {int(code): {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()}


def generating_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a generating route: the answer as JSON, or its SSE stream; the errors."""
    answer = {
        "model": model,
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
        "description": "the answer, or its SSE stream with stream=true",
    }
    return {200: answer, **error_responses()}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the request bodies the routes read themselves."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        mode: Literal["validation"] = "validation"
        refs, definitions = models_json_schema([(m, mode) for m in REQUEST_BODIES.values()], ref_template=_REF)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        for path, model in REQUEST_BODIES.items():
            operation = schema["paths"][path]["post"]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(model, mode)]}},
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
