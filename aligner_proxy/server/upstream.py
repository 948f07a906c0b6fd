"""Upstreams: where the answers that the proxy aligns come from.

Two kinds share one interface: :class:`OpenAIUpstream` forwards to any
OpenAI-compatible server over one pooled ``httpx.AsyncClient`` (opened in the
app's lifespan, explicit timeouts, retried under :mod:`aligner_proxy.core.http`'s
rule), and
:class:`EmbeddedUpstream` answers with an in-process :class:`ChatGenerator`
(the default: SmolLM2-135M-Instruct). Streams yield :class:`StreamEvent`\\ s that
keep the upstream's raw JSON so a pass-through stream is byte-faithful.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from aligner_proxy.core.generation import ChatGenerator, GenerationParams
from aligner_proxy.core.http import (
    BodyTooLargeError,
    ExchangeTimeoutError,
    IncompleteStreamError,
    RetryPolicy,
    SendError,
    UnreachableError,
    make_client,
    read_body,
    send_with_retries,
    sse_data,
    stream_with_retries,
)
from aligner_proxy.core.redact import redact_text, redact_url
from aligner_proxy.server.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from aligner_proxy.server.protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ResponseMessage,
    Usage,
)

ChunkT = TypeVar("ChunkT", ChatCompletionChunk, CompletionChunk)
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class StreamEvent(Generic[ChunkT]):
    """One SSE ``data:`` payload: the raw JSON as the upstream sent it, and its parsed form."""

    raw: str
    chunk: ChunkT


class Upstream(Protocol):
    """What the service layer needs from an upstream. ``model`` is the upstream's model name."""

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse: ...

    def chat_stream(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[ChatCompletionChunk], None]: ...

    async def completion(self, request: CompletionRequest, model: str) -> CompletionResponse: ...

    def completion_stream(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[CompletionChunk], None]: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------- remote

UPSTREAM_MAX_CONNECTIONS = 256
"""Open connections to one upstream at most (the admission limit's default: one per admitted request)."""


class OpenAIUpstream:
    """Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, another proxy)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
        retry_deadline_s: float = 30.0,
        deadline_s: float = 600.0,
        max_bytes: int = 16_000_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.display_url = redact_url(self.base_url)  # what messages and logs may show
        self._api_key = api_key  # only to scrub it from the upstream's error messages
        self.deadline_s = deadline_s  # one call, retries and every byte of the body included
        self.max_bytes = max_bytes  # the largest answer read, whole or streamed
        self.retry = RetryPolicy(max_retries=retries, backoff_s=0.2, max_backoff_s=2.0, deadline_s=retry_deadline_s)
        self._client = make_client(
            self.base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=UPSTREAM_MAX_CONNECTIONS,
            max_keepalive=64,
            transport=transport,
        )
        # Each endpoint's absolute URL, merged with the base once: httpx re-parses and joins a relative
        # path on every request otherwise.
        paths = ("/chat/completions", "/completions")
        self._urls = {path: self._client.build_request("POST", path).url for path in paths}

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        return await self._post("/chat/completions", request.upstream_body(model), ChatCompletionResponse)

    async def completion(self, request: CompletionRequest, model: str) -> CompletionResponse:
        return await self._post("/completions", request.upstream_body(model), CompletionResponse)

    def chat_stream(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[ChatCompletionChunk], None]:
        return self._stream("/chat/completions", request.upstream_body(model), ChatCompletionChunk)

    def completion_stream(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[CompletionChunk], None]:
        return self._stream("/completions", request.upstream_body(model), CompletionChunk)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _request(self, path: str, body: dict[str, Any]) -> httpx.Request:
        return self._client.build_request("POST", self._urls[path], json=body)

    async def _post(self, path: str, body: dict[str, Any], model_cls: type[ModelT]) -> ModelT:
        try:
            async with asyncio.timeout(self.deadline_s):
                opened = await send_with_retries(
                    self._client, lambda: self._request(path, body), self.retry, stream=True
                )
                try:
                    content = await read_body(opened, self.max_bytes)
                finally:
                    await opened.aclose()
        except _WIRE_FAILURES as exc:
            raise self._failure(exc, streaming=False) from exc
        if opened.status_code >= 400:
            raise _upstream_error(opened, content, self._api_key)
        try:
            return model_cls.model_validate_json(content)
        except ValidationError as exc:
            raise UpstreamError(f"the upstream returned a malformed {path} response") from exc

    async def _stream(
        self, path: str, body: dict[str, Any], chunk_cls: type[ChunkT]
    ) -> AsyncGenerator[StreamEvent[ChunkT], None]:
        deadline = time.monotonic() + self.deadline_s
        try:
            async with stream_with_retries(self._client, lambda: self._request(path, body), self.retry) as response:
                if response.status_code >= 400:
                    raise _upstream_error(response, await read_body(response, self.max_bytes), self._api_key)
                async for payload in sse_data(response, deadline=deadline, max_bytes=self.max_bytes):
                    try:
                        chunk = chunk_cls.model_validate_json(payload)
                    except ValidationError as exc:
                        raise _stream_error(payload, self._api_key) from exc
                    yield StreamEvent(payload, chunk)
        except _WIRE_FAILURES as exc:
            raise self._failure(exc, streaming=True) from exc

    def _failure(self, exc: BaseException, *, streaming: bool) -> UpstreamError:
        """The one mapping of what went wrong on the wire to the error the client gets, whole or streamed."""
        if isinstance(exc, SendError):
            return _send_error(exc, self.display_url)
        if isinstance(exc, IncompleteStreamError):
            return UpstreamError(f"the upstream's stream was cut short ({exc}): the answer is incomplete")
        if isinstance(exc, TimeoutError):  # the total deadline (StreamDeadlineError is one)
            if streaming:
                return UpstreamTimeoutError(f"the upstream's stream took over {self.deadline_s:g} s")
            return UpstreamTimeoutError(f"the upstream took over {self.deadline_s:g} s to answer")
        if isinstance(exc, BodyTooLargeError):
            return UpstreamError(f"the upstream's answer is too large ({exc})")
        if isinstance(exc, httpx.TimeoutException):  # one read, after the head came
            when = " mid-stream" if streaming else ""
            return UpstreamTimeoutError(f"the upstream at {self.display_url} timed out{when}")
        dropped = "the stream" if streaming else "the connection"
        return UpstreamUnavailableError(f"the upstream at {self.display_url} dropped {dropped}")


_WIRE_FAILURES = (SendError, IncompleteStreamError, TimeoutError, BodyTooLargeError, httpx.TransportError)
"""What can go wrong between the proxy and the upstream (the upstream's own error answers aside)."""


def _send_error(exc: SendError, base_url: str) -> UpstreamError:
    """No answer head from the upstream: a timeout is a 504, unreachable or a broken connection a 503."""
    if isinstance(exc, ExchangeTimeoutError):
        return UpstreamTimeoutError(f"the upstream at {base_url} timed out")
    if isinstance(exc, UnreachableError):
        return UpstreamUnavailableError(f"the upstream at {base_url} is unreachable")
    return UpstreamUnavailableError(f"the upstream at {base_url} dropped the connection")


def _stream_error(payload: str, api_key: str | None) -> UpstreamError:
    """A stream chunk that is not a chunk: the upstream's own error object is relayed, anything else is malformed."""
    try:
        error = json.loads(payload).get("error")
    except (json.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return UpstreamError(
            f"the upstream failed mid-stream: {redact_text(str(error['message']), [api_key])}",
            error_type=error.get("type") or "upstream_error",
            code=error.get("code"),
        )
    return UpstreamError("the upstream sent a malformed stream chunk")


def _upstream_error(response: httpx.Response, content: bytes, api_key: str | None) -> UpstreamError:
    """Relay the upstream's own error (its body, ``content``): a 4xx keeps its status, a 5xx becomes a 502."""
    message, error_type, param, code = f"the upstream answered HTTP {response.status_code}", None, None, None
    try:
        error = json.loads(content).get("error", {})
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            error_type, param, code = error.get("type"), error.get("param"), error.get("code")
    except (ValueError, AttributeError):  # not JSON, not UTF-8, or not an object
        pass  # a non-JSON error page: the status line says enough
    status = response.status_code if response.status_code < 500 else 502
    retry_after = response.headers.get("retry-after")
    return UpstreamError(
        redact_text(message, [api_key]),
        status_code=status,
        error_type=error_type or ("invalid_request_error" if status < 500 else "upstream_error"),
        param=param,
        code=code,
        # A 429's wait, passed on: the client should back off as the upstream asked.
        headers={"retry-after": retry_after} if retry_after and status == 429 else None,
    )


# ------------------------------------------------------------------- embedded


class EmbeddedUpstream:
    """The in-process model as an upstream. Without a ``temperature`` it decodes greedily,
    which is what a 135M model needs to stay coherent (OpenAI's default would be 1.0), with a
    repetition penalty: greedy decoding of a small model otherwise loops on one phrase to the
    token cap."""

    def __init__(
        self, generator: ChatGenerator, *, default_max_tokens: int = 256, repetition_penalty: float = 1.0
    ) -> None:
        self.generator = generator
        self.default_max_tokens = default_max_tokens
        self.repetition_penalty = repetition_penalty

    def _params(
        self, max_tokens: int | None, temperature: float | None, top_p: float | None, stop: list[str], seed: int | None
    ) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=max_tokens or self.default_max_tokens,
            temperature=temperature or 0.0,
            top_p=top_p or 1.0,
            stop=tuple(stop),
            seed=seed,
            repetition_penalty=self.repetition_penalty,
        )

    def _chat_prompt(self, request: ChatCompletionRequest) -> str:
        return self.generator.render_chat([m.to_core() for m in request.messages])

    def _chat_params(self, request: ChatCompletionRequest) -> GenerationParams:
        return self._params(
            request.max_completion_tokens or request.max_tokens,
            request.temperature,
            request.top_p,
            request.stop_list(),
            request.seed,
        )

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        prompt = self._chat_prompt(request)
        generations = await self.generator.generate([prompt] * request.n, self._chat_params(request))
        return ChatCompletionResponse(
            model=model,
            choices=[
                ChatChoice(
                    index=i, message=ResponseMessage(role="assistant", content=g.text), finish_reason=g.finish_reason
                )
                for i, g in enumerate(generations)
            ],
            usage=_usage(generations[0].prompt_tokens, sum(g.completion_tokens for g in generations)),
        )

    async def completion(self, request: CompletionRequest, model: str) -> CompletionResponse:
        prompts = [p for p in request.prompts() for _ in range(request.n)]
        params = self._params(request.max_tokens, request.temperature, request.top_p, request.stop_list(), request.seed)
        generations = await self.generator.generate(prompts, params)
        return CompletionResponse(
            model=model,
            choices=[
                CompletionChoice(index=i, text=(p if request.echo else "") + g.text, finish_reason=g.finish_reason)
                for i, (p, g) in enumerate(zip(prompts, generations, strict=True))
            ],
            usage=_usage(sum(g.prompt_tokens for g in generations), sum(g.completion_tokens for g in generations)),
        )

    async def chat_stream(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[ChatCompletionChunk], None]:
        prompt, params = self._chat_prompt(request), self._chat_params(request)
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def event(choice: ChunkChoice) -> StreamEvent[ChatCompletionChunk]:
            chunk = ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[choice])
            return StreamEvent(chunk.model_dump_json(exclude_none=True), chunk)

        for index in range(request.n):
            yield event(ChunkChoice(index=index, delta=ChunkDelta(role="assistant", content="")))
            parts: list[str] = []
            async for delta in self.generator.stream(prompt, params):
                parts.append(delta)
                yield event(ChunkChoice(index=index, delta=ChunkDelta(content=delta)))
            hit_limit = self.generator.count_tokens("".join(parts)) >= params.max_new_tokens
            finish = "length" if hit_limit else "stop"
            yield event(ChunkChoice(index=index, delta=ChunkDelta(), finish_reason=finish))

    async def completion_stream(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[CompletionChunk], None]:
        params = self._params(request.max_tokens, request.temperature, request.top_p, request.stop_list(), request.seed)
        chunk_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def event(choice: CompletionChoice) -> StreamEvent[CompletionChunk]:
            chunk = CompletionChunk(id=chunk_id, created=created, model=model, choices=[choice])
            return StreamEvent(chunk.model_dump_json(exclude_none=True), chunk)

        index = 0
        for prompt in request.prompts():
            for _ in range(request.n):
                if request.echo:
                    yield event(CompletionChoice(index=index, text=prompt))
                async for delta in self.generator.stream(prompt, params):
                    yield event(CompletionChoice(index=index, text=delta))
                yield event(CompletionChoice(index=index, text="", finish_reason="stop"))
                index += 1

    async def aclose(self) -> None:
        await self.generator.aclose()


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )
