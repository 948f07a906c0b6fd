"""OpenAIUpstream with httpx.MockTransport: retries, error relay, stream parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from aligner_proxy.server.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from aligner_proxy.server.protocol import ChatCompletionRequest
from aligner_proxy.server.upstream import OpenAIUpstream

REQUEST = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]
OK = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
}


def upstream(handler, retries: int = 2) -> OpenAIUpstream:  # type: ignore[no-untyped-def]
    return OpenAIUpstream("http://up/v1", api_key="sk-secret", retries=retries, transport=httpx.MockTransport(handler))


async def test_sends_key_and_retries_5xx_then_succeeds() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502 if len(seen) < 3 else 200, json=OK)

    response = await upstream(handler).chat(REQUEST, "up-model")
    assert response.choices[0].message.content == "hello"
    assert len(seen) == 3
    assert seen[0].headers["authorization"] == "Bearer sk-secret"
    assert json.loads(seen[0].content)["model"] == "up-model"


async def test_5xx_after_retries_is_502_a_500_is_not_retried_and_4xx_is_relayed_without_retry() -> None:
    calls = []

    def overloaded(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, text="overloaded")

    with pytest.raises(UpstreamError) as info:
        await upstream(overloaded, retries=1).chat(REQUEST, "m")
    assert info.value.status_code == 502 and len(calls) == 2

    def failing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, text="boom")

    calls.clear()
    with pytest.raises(UpstreamError) as info:
        await upstream(failing, retries=1).chat(REQUEST, "m")
    assert info.value.status_code == 502 and len(calls) == 1  # the upstream may have generated: not sent again

    def bad(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            400,
            json={
                "error": {
                    "message": "bad temperature",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": None,
                }
            },
        )

    calls.clear()
    with pytest.raises(UpstreamError) as info:
        await upstream(bad).chat(REQUEST, "m")
    assert (info.value.status_code, info.value.param, info.value.message) == (400, "temperature", "bad temperature")
    assert len(calls) == 1


async def test_connect_errors_and_timeouts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailableError) as info:
        await upstream(refuse, retries=1).chat(REQUEST, "m")
    assert "sk-secret" not in str(info.value)

    calls = []

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(UpstreamTimeoutError):
        await upstream(slow).chat(REQUEST, "m")
    assert len(calls) == 1  # the request was sent: a retry could generate twice


async def test_stream_head_is_retried_and_a_broken_body_is_a_503() -> None:
    calls = []

    async def broken_body(request: httpx.Request) -> AsyncIterator[bytes]:
        yield b'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}\n\n'
        raise httpx.ReadError("reset", request=request)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(502, text="bad gateway")
        return httpx.Response(200, content=broken_body(request), headers={"content-type": "text/event-stream"})

    events = []
    with pytest.raises(UpstreamUnavailableError, match="dropped the stream"):
        async for event in upstream(handler).chat_stream(REQUEST, "m"):
            events.append(event)
    assert len(events) == 1 and len(calls) == 2


async def test_stream_parses_data_lines_and_stops_at_done() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    body = f": comment\n\ndata: {json.dumps(chunk)}\n\ndata: [DONE]\n\ndata: {json.dumps(chunk)}\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    events = [event async for event in upstream(handler).chat_stream(REQUEST, "m")]
    assert len(events) == 1
    assert events[0].raw == json.dumps(chunk) and events[0].chunk.choices[0].delta.content == "hi"


async def test_malformed_upstream_body_is_an_upstream_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    with pytest.raises(UpstreamError, match="malformed"):
        await upstream(handler).chat(REQUEST, "m")
