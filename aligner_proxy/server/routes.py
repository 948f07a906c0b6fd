"""HTTP routes: parse the body into a pydantic model, call the service, shape the response.

Bodies are parsed here rather than by FastAPI's automatic validation so that
oversized, non-JSON and invalid bodies all get OpenAI-shaped 4xx errors
(OpenAI answers 400 where FastAPI would say 422).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from aligner_proxy.core.annotation import CorrectResponse
from aligner_proxy.server.bodies import decode_json_object
from aligner_proxy.server.errors import InvalidRequestError, NotReadyError, RequestTooLargeError
from aligner_proxy.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    CorrectRequest,
    ModelList,
    ScoreRequest,
    ScoreResponse,
)
from aligner_proxy.server.service import ProxyService

router = APIRouter()
BodyT = TypeVar("BodyT", bound=BaseModel)


def get_service(request: Request) -> ProxyService:
    state = request.app.state.proxy
    if state.components is None:
        detail = f" (loading failed: {state.load_error})" if state.load_error else "; retry shortly"
        raise NotReadyError(f"The proxy is loading its models{detail}.")
    service: ProxyService = state.components.service
    return service


Service = Annotated[ProxyService, Depends(get_service)]


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


def _sse(stream: object, request_id: str) -> StreamingResponse:
    return StreamingResponse(
        stream,  # type: ignore[arg-type]
        media_type="text/event-stream",
        headers={"x-request-id": request_id, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _json(body: BaseModel, status: str | None) -> JSONResponse:
    headers = {"x-aligner-status": status} if status else None
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, service: Service) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    request_id = request.state.request_id
    if body.stream:
        return _sse(service.chat_stream(body, request_id), request_id)
    response = await service.chat(body, request_id)
    return _json(response, response.aligner.status if response.aligner else None)


@router.post("/v1/completions")
async def completions(request: Request, service: Service) -> Response:
    body = await parse_body(request, CompletionRequest)
    request_id = request.state.request_id
    if body.stream:
        return _sse(service.completion_stream(body, request_id), request_id)
    response = await service.completion(body, request_id)
    return _json(response, response.aligner.status if response.aligner else None)


@router.get("/v1/models")
async def models(service: Service) -> ModelList:
    return service.model_list()


@router.post("/v1/aligner/score")
async def score(request: Request, service: Service) -> ScoreResponse:
    body = await parse_body(request, ScoreRequest)
    if len(body.prompts) != len(body.completions):
        raise InvalidRequestError(
            f"{len(body.prompts)} prompts but {len(body.completions)} completions", param="completions"
        )
    return await service.score(body)


@router.post("/v1/aligner/correct")
async def correct(request: Request, service: Service) -> CorrectResponse:
    return await service.correct(await parse_body(request, CorrectRequest))


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(service: Service) -> dict[str, object]:
    return {"status": "ready", "models": sorted(service.routes)}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.proxy.metrics.render(), media_type="text/plain; version=0.0.4")
