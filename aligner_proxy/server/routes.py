"""HTTP routes: parse the body into a pydantic model, call the endpoint's serving class, shape the response.

Bodies are parsed here rather than by FastAPI's automatic validation so that
oversized, non-JSON and invalid bodies all get OpenAI-shaped 4xx errors
(OpenAI answers 400 where FastAPI would say 422).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from aligner_proxy.core.annotation import CorrectResponse
from aligner_proxy.server.bodies import check_generation_limits, decode_json_object
from aligner_proxy.server.errors import InvalidRequestError, NotReadyError, RequestTooLargeError
from aligner_proxy.server.openapi import GUARDRAIL_PATH, error_responses, generating_responses
from aligner_proxy.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    CorrectRequest,
    ErrorResponse,
    GuardrailRequest,
    GuardrailResponse,
    ModelList,
    ScoreRequest,
    ScoreResponse,
)
from aligner_proxy.server.serving.annotation import aligner_headers
from aligner_proxy.server.wiring import Components

router = APIRouter()
BodyT = TypeVar("BodyT", bound=BaseModel)


async def loaded_components(request: Request) -> Components:
    """The loaded models, or a 503 while they load. ``async`` because FastAPI runs a plain ``def``
    dependency in its thread pool: a thread hop on every request for two attribute reads."""
    state = request.app.state.proxy
    if state.components is None:
        detail = f" (loading failed: {state.load_error})" if state.load_error else "; retry shortly"
        raise NotReadyError(f"The proxy is loading its models{detail}.")
    components: Components = state.components
    return components


Loaded = Annotated[Components, Depends(loaded_components)]


async def parse_body(request: Request, model: type[BodyT]) -> BodyT:
    limit = request.app.state.proxy.settings.max_body_bytes
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            raise RequestTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
    data = decode_json_object(bytes(raw), content_type=request.headers.get("content-type"))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # A union's member is named in the location ('prompt.str'); the client knows the field.
        param = ".".join(str(part) for part in first["loc"] if not _is_union_member(part))
        raise InvalidRequestError(f"{param or 'body'}: {first['msg']}", param=param or None) from None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_union_member(part: object) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)


def _sse(stream: AsyncIterator[str], request_id: str) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"x-request-id": request_id, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _json(response: ChatCompletionResponse | CompletionResponse) -> Response:
    """The response serialised once, by pydantic's own encoder (no dict and ``json.dumps`` in between)."""
    return Response(
        response.model_dump_json(), media_type="application/json", headers=aligner_headers(response.aligner)
    )


@router.post(
    "/v1/chat/completions",
    responses=generating_responses(ChatCompletionResponse),
)
async def chat_completions(request: Request, components: Loaded) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    settings = request.app.state.proxy.settings
    check_generation_limits(settings, max_tokens=body.max_completion_tokens or body.max_tokens, answers=body.n)
    request_id = request.state.request_id
    may_relax = request.state.may_relax
    if body.stream:
        return _sse(components.chat.create_stream(body, request_id, may_relax=may_relax), request_id)
    return _json(await components.chat.create(body, request_id, may_relax=may_relax))


@router.post(
    "/v1/completions",
    responses=generating_responses(CompletionResponse),
)
async def completions(request: Request, components: Loaded) -> Response:
    body = await parse_body(request, CompletionRequest)
    settings = request.app.state.proxy.settings
    check_generation_limits(
        settings, max_tokens=body.max_tokens, answers=len(body.prompts()) * body.n, answers_param="prompt"
    )
    request_id = request.state.request_id
    may_relax = request.state.may_relax
    if body.stream:
        return _sse(components.completions.create_stream(body, request_id, may_relax=may_relax), request_id)
    return _json(await components.completions.create(body, request_id, may_relax=may_relax))


@router.get("/v1/models", responses=error_responses())
async def models(components: Loaded) -> ModelList:
    return components.models.model_list()


@router.post("/v1/aligner/score", responses=error_responses())
async def score(request: Request, components: Loaded) -> ScoreResponse:
    return await components.aligner.score(await parse_body(request, ScoreRequest))


@router.post("/v1/aligner/correct", responses=error_responses())
async def correct(request: Request, components: Loaded) -> CorrectResponse:
    return await components.aligner.correct(await parse_body(request, CorrectRequest))


@router.post(GUARDRAIL_PATH, responses=error_responses())
async def litellm_guardrail(request: Request, components: Loaded) -> GuardrailResponse:
    body = await parse_body(request, GuardrailRequest)
    return await components.guardrail.check(body, request.state.request_id, may_relax=request.state.may_relax)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"model": ErrorResponse, "description": "the models are loading"}})
async def ready(components: Loaded) -> dict[str, object]:
    return {"status": "ready", "models": sorted(components.models.routes)}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.proxy.metrics.render(), media_type="text/plain; version=0.0.4")
