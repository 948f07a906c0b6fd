"""Both transports under the one retry rule, on real sockets: what was never sent is retried, nothing else is."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from aligner_proxy.core.http import (
    ExchangeError,
    ExchangeTimeoutError,
    RetryPolicy,
    UnreachableError,
    make_client,
    send_with_retries,
    sse_data,
    stream_with_retries,
)
from aligner_proxy.core.transport import TransportKind, make_transport

FAST = RetryPolicy(max_retries=2, backoff_s=0.001, max_backoff_s=0.001, deadline_s=30.0)
KINDS: list[TransportKind] = ["httpx", "aiohttp"]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on a free loopback port running ``handler`` per connection; yields its URL and a
    one-element list counting the requests whose head it read."""
    seen = [0]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
        )
        await reader.readexactly(length)
        seen[0] += 1
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, answer nothing, close: the request may have been acted on."""


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    events = b"".join(b'data: {"n": %d}\n\n' % i for i in range(3)) + b"data: [DONE]\n\n"
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(events) + events
    )
    await writer.drain()


def client(kind: TransportKind, url: str, *, timeout_s: float = 10.0) -> httpx.AsyncClient:
    return make_client(url, timeout_s=timeout_s, max_connections=4, transport=make_transport(kind, max_connections=4))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_that_hangs_up_after_the_request_is_not_sent_a_second_one(kind: TransportKind) -> None:
    async with raw_server(hang_up) as (url, seen), client(kind, url) as c:
        with pytest.raises(ExchangeError) as caught:
            await send_with_retries(c, lambda: c.build_request("POST", "/v1/chat/completions", json={"a": 1}), FAST)
    assert not isinstance(caught.value, UnreachableError)
    assert seen[0] == 1 and caught.value.attempts == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_closed_port_is_retried_as_never_sent(kind: TransportKind) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with client(kind, f"http://127.0.0.1:{port}") as c:
            with pytest.raises(UnreachableError) as caught:
                await send_with_retries(c, lambda: c.build_request("POST", "/x", json={}), FAST)
    assert caught.value.attempts == FAST.max_retries + 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_silent_server_is_a_timeout_that_is_not_retried(kind: TransportKind) -> None:
    async with raw_server(stall) as (url, seen), client(kind, url, timeout_s=0.3) as c:
        with pytest.raises(ExchangeTimeoutError):
            await send_with_retries(c, lambda: c.build_request("POST", "/x", json={}), FAST)
    assert seen[0] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_streamed_body_reads_the_same_events(kind: TransportKind) -> None:
    async with raw_server(sse) as (url, _), client(kind, url) as c:
        async with stream_with_retries(c, lambda: c.build_request("POST", "/x", json={}), FAST) as response:
            events = [event async for event in sse_data(response)]
    assert events == ['{"n": 0}', '{"n": 1}', '{"n": 2}']  # [DONE] ends the stream, not an event


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown HTTP transport"):
        make_transport("curl", max_connections=1)  # type: ignore[arg-type]
