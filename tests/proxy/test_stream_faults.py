"""Faults on the wire: cut streams, streams without [DONE], drips past the deadline, error objects mid-stream.

The upstream and the remote corrector read SSE through one reader
(``core.http.sse_data``); each fault must surface as an error with a bounded
time, never as a complete answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator
from aligner_proxy.core.errors import BackendConnectionError
from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.server.errors import UpstreamError, UpstreamTimeoutError
from aligner_proxy.server.protocol import ChatCompletionRequest
from aligner_proxy.server.upstream import OpenAIUpstream

REQUEST = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]


def chat_chunk(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return f"data: {json.dumps(chunk)}\n\n".encode()


def completion_chunk(text: str) -> bytes:
    chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "m"}
    chunk["choices"] = [{"index": 0, "text": text, "finish_reason": None}]
    return f"data: {json.dumps(chunk)}\n\n".encode()


class Body(httpx.AsyncByteStream):
    """A response body sent piece by piece, ``delay_s`` apart."""

    def __init__(self, parts: list[bytes], delay_s: float = 0.0) -> None:
        self.parts = parts
        self.delay_s = delay_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield part


def transport(parts: list[bytes], delay_s: float = 0.0, *, sse: bool = True) -> httpx.MockTransport:
    content_type = "text/event-stream" if sse else "application/json"

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, stream=Body(parts, delay_s))

    return httpx.MockTransport(handler)


def upstream(
    parts: list[bytes], delay_s: float = 0.0, *, deadline_s: float = 600.0, sse: bool = True
) -> OpenAIUpstream:
    return OpenAIUpstream("http://up/v1", deadline_s=deadline_s, transport=transport(parts, delay_s, sse=sse))


async def read_stream(up: OpenAIUpstream) -> list[str]:
    return [event.raw async for event in up.chat_stream(REQUEST, "m")]


async def test_a_stream_without_done_is_an_error_not_an_answer() -> None:
    with pytest.raises(UpstreamError, match="cut short"):
        await read_stream(upstream([chat_chunk("Hello"), chat_chunk(" world")]))


async def test_a_complete_stream_still_reads() -> None:
    assert len(await read_stream(upstream([chat_chunk("Hello"), b"data: [DONE]\n\n"]))) == 1


async def test_a_drip_past_the_deadline_times_out_in_bounded_time() -> None:
    parts = [chat_chunk("x")] * 100 + [b"data: [DONE]\n\n"]
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match=r"took over 0\.5 s"):
        await read_stream(upstream(parts, delay_s=0.05, deadline_s=0.5))
    assert time.monotonic() - started < 3.0


async def test_a_non_streamed_drip_past_the_deadline_times_out() -> None:
    body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []}).encode()
    up = upstream([body[i : i + 1] for i in range(len(body))], delay_s=0.02, deadline_s=0.3, sse=False)
    with pytest.raises(UpstreamTimeoutError, match=r"took over 0\.3 s"):
        await up.chat(REQUEST, "m")


async def test_the_upstreams_own_error_object_is_relayed() -> None:
    error = {"error": {"message": "the engine ran out of memory", "type": "server_error", "code": "oom"}}
    with pytest.raises(UpstreamError, match="ran out of memory") as caught:
        await read_stream(upstream([chat_chunk("Hi"), f"data: {json.dumps(error)}\n\n".encode()]))
    assert caught.value.code == "oom"


def corrector(parts: list[bytes], delay_s: float = 0.0, deadline_s: float = 300.0) -> RemoteCompletionsGenerator:
    return RemoteCompletionsGenerator(
        "http://corrector/v1", "aligner", deadline_s=deadline_s, transport=transport(parts, delay_s)
    )


async def test_a_correction_stream_cut_short_is_a_backend_failure() -> None:
    gen = corrector([completion_chunk("I can't"), completion_chunk(" help")])
    with pytest.raises(BackendConnectionError, match="cut short"):
        _ = [piece async for piece in gen.stream("prompt", GenerationParams())]


async def test_a_dripping_correction_stream_stops_at_its_deadline() -> None:
    gen = corrector([completion_chunk("x")] * 100, delay_s=0.05, deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(BackendConnectionError, match=r"took over 0\.5 s"):
        _ = [piece async for piece in gen.stream("prompt", GenerationParams())]
    assert time.monotonic() - started < 3.0


def test_an_upstream_429_reaches_the_client_with_its_retry_after() -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from tests.proxy.fakes import serve
    from tests.proxy.helpers import MODEL, running_proxy

    up = FastAPI()

    @up.post("/v1/chat/completions")
    async def busy() -> JSONResponse:
        error = {"error": {"message": "slow down", "type": "rate_limit_error"}}
        return JSONResponse(error, status_code=429, headers={"retry-after": "7"})

    with serve(up) as upstream, running_proxy(upstream, upstream_retries=0) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        )
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["message"] == "slow down"


async def test_an_answer_past_the_byte_limit_is_cut_off_whole_or_streamed() -> None:
    big = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []}) + " " * 5000
    whole = OpenAIUpstream("http://up/v1", max_bytes=2048, transport=transport([big.encode()], sse=False))
    with pytest.raises(UpstreamError, match="too large"):
        await whole.chat(REQUEST, "m")
    streamed = OpenAIUpstream("http://up/v1", max_bytes=2048, transport=transport([chat_chunk("x" * 100)] * 40))
    with pytest.raises(UpstreamError, match="too large"):
        await read_stream(streamed)
    fits = OpenAIUpstream("http://up/v1", transport=transport([chat_chunk("Hi"), b"data: [DONE]\n\n"]))
    assert len(await read_stream(fits)) == 1
