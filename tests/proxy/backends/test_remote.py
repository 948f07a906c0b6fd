"""The OpenAI-compatible /v1/completions client, against httpx.MockTransport and a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path

import httpx
import pytest

from aligner_proxy.core.backends import BackendConnectionError, BackendResponseError
from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator
from aligner_proxy.core.generation import Generation, GenerationParams, TextGenerator

SECRET = "sk-test-secret-4242"
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def _completion(text: str, finish: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 2) -> dict:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def _client(handler: Handler, **kwargs: object) -> RemoteCompletionsGenerator:
    options: dict = {"api_key": SECRET, "backoff_s": 0.0, **kwargs}
    return RemoteCompletionsGenerator(
        "http://aligner.test/v1", "aligner-7b", transport=httpx.MockTransport(handler), **options
    )


async def test_one_request_per_prompt_with_the_openai_body() -> None:
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        prompt = json.loads(request.content)["prompt"]
        finish = "length" if prompt == "b" else "stop"
        return httpx.Response(200, json=_completion(prompt.upper(), finish))

    generator = _client(handler)
    assert isinstance(generator, TextGenerator)
    params = GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.9, stop=("\n",), seed=3)
    results = await generator.generate(["a", "b", "c"], params)
    assert results == [
        Generation("A", 3, 2, "stop"),
        Generation("B", 3, 2, "length"),
        Generation("C", 3, 2, "stop"),
    ]
    assert len(requests) == 3
    assert str(requests[0].url) == "http://aligner.test/v1/completions"
    assert requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert json.loads(requests[0].content) == {
        "model": "aligner-7b",
        "prompt": "a",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": False,
        "stop": ["\n"],
        "seed": 3,
    }
    await generator.aclose()


async def test_concurrency_is_limited() -> None:
    active = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return httpx.Response(200, json=_completion("ok"))

    generator = _client(handler, max_concurrency=2)
    results = await generator.generate(["p"] * 6, GenerationParams())
    assert [r.text for r in results] == ["ok"] * 6
    assert peak == 2


async def test_5xx_is_retried_then_succeeds() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return httpx.Response(200, json=_completion("fine"))

    (result,) = await _client(handler, max_retries=2).generate(["p"], GenerationParams())
    assert result.text == "fine" and calls == 3


async def test_5xx_after_the_last_retry_is_a_response_error() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json={"error": {"message": "boom"}})

    with pytest.raises(BackendResponseError, match="503: boom") as caught:
        await _client(handler, max_retries=1).generate(["p"], GenerationParams())
    assert caught.value.status_code == 503 and calls == 2


async def test_500_and_read_errors_are_not_retried() -> None:
    calls = 0

    async def failing(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, json={"error": {"message": "boom"}})

    with pytest.raises(BackendResponseError, match="500: boom") as caught:
        await _client(failing, max_retries=2).generate(["p"], GenerationParams())
    assert caught.value.status_code == 500 and calls == 1  # the server may have generated: not asked twice

    async def reset(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadError("connection reset", request=request)

    calls = 0
    with pytest.raises(BackendConnectionError, match="failed"):
        await _client(reset, max_retries=2).generate(["p"], GenerationParams())
    assert calls == 1


async def test_4xx_is_not_retried() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})

    with pytest.raises(BackendResponseError, match="max_tokens is too large") as caught:
        await _client(handler).generate(["p"], GenerationParams())
    assert caught.value.status_code == 400 and calls == 1


async def test_connect_errors_are_retried_then_raised() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(BackendConnectionError, match=re.escape("cannot reach http://aligner.test/v1/completions")):
        await _client(handler, max_retries=2).generate(["p"], GenerationParams())
    assert calls == 3


async def test_malformed_body_is_a_response_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    with pytest.raises(BackendResponseError, match="malformed"):
        await _client(handler).generate(["p"], GenerationParams())


def _sse(*chunks: object) -> bytes:
    lines = [f"data: {json.dumps(c) if not isinstance(c, str) else c}\n\n" for c in chunks]
    return "".join(lines).encode()


async def test_stream_yields_deltas_until_done() -> None:
    bodies: list[dict] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        content = b": keep-alive\n\n" + _sse(
            _completion("Hel"), _completion("lo"), {"choices": [{"text": "", "finish_reason": "stop"}]}, "[DONE]"
        )
        content += _sse(_completion("after done"))
        return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})

    deltas = [d async for d in _client(handler).stream("p", GenerationParams())]
    assert deltas == ["Hel", "lo"]
    assert bodies[0]["stream"] is True


async def test_stream_error_chunk_raises() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(_completion("a"), {"error": {"message": "engine died"}}, "[DONE]"))

    with pytest.raises(BackendResponseError, match="engine died"):
        [d async for d in _client(handler).stream("p", GenerationParams())]


async def test_stream_error_status_raises_with_the_message() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    with pytest.raises(BackendResponseError, match="401: bad key"):
        [d async for d in _client(handler).stream("p", GenerationParams())]


def test_token_estimate_is_four_characters_per_token() -> None:
    generator = RemoteCompletionsGenerator("http://x/v1", "m")
    assert generator.count_tokens("abcdefghi") == 3
    assert generator.truncate("abcdefghij", 2) == "abcdefgh"
    assert generator.truncate("abcdefghij", 2, keep="tail") == "cdefghij"
    assert generator.truncate("abc", 0) == ""


def test_a_local_tokenizer_gives_exact_counts(tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    text = "How do I bake bread at home?"
    expected = len(AutoTokenizer.from_pretrained(tiny_lm_dir)(text, add_special_tokens=False).input_ids)
    generator = RemoteCompletionsGenerator("http://x/v1", "m", tokenizer=tiny_lm_dir)
    assert generator.count_tokens(text) == expected != RemoteCompletionsGenerator("http://x/v1", "m").count_tokens(text)
    assert text.startswith(generator.truncate(text, 3))


# ----------------------------------------------------------- a real socket on 127.0.0.1


class FakeCompletionsServer:
    """A minimal HTTP/1.1 /v1/completions server: JSON replies, or SSE written chunk by chunk."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        self.authorizations.append(headers.get("authorization", ""))
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        words = ["Sure", ",", " here", " is", " a", " safer", " answer", "."]
        if body["stream"]:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            for word in words:
                writer.write(_sse(_completion(word)))
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.write(_sse("[DONE]"))
        else:
            payload = json.dumps(_completion("".join(words), completion_tokens=len(words))).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        await writer.drain()
        writer.close()


async def test_against_a_real_socket_server_without_leaking_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeCompletionsServer()
    async with fake as base_url:
        generator = RemoteCompletionsGenerator(base_url, "aligner", api_key=SECRET)
        (result,) = await generator.generate(["Q | A"], GenerationParams(max_new_tokens=16))
        deltas: list[str] = []
        stream: AsyncIterator[str] = generator.stream("Q | A", GenerationParams(max_new_tokens=16))
        async for delta in stream:
            deltas.append(delta)
        await generator.aclose()
    assert result.text == "Sure, here is a safer answer." and result.completion_tokens == 8
    assert "".join(deltas) == result.text and len(deltas) == 8
    assert fake.authorizations == [f"Bearer {SECRET}"] * 2
    assert caplog.records  # httpx logged the requests...
    assert all(SECRET not in record.getMessage() for record in caplog.records)  # ...but never the key
    assert SECRET not in repr(generator)


async def test_unreachable_server_is_a_connection_error() -> None:
    async with FakeCompletionsServer() as base_url:
        pass  # the port is closed again now
    generator = RemoteCompletionsGenerator(base_url, "m", max_retries=1, backoff_s=0.0)
    with pytest.raises(BackendConnectionError):
        await generator.generate(["p"], GenerationParams())
    await generator.aclose()
