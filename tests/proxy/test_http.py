"""The one outbound retry rule (aligner_proxy.core.http) against httpx.MockTransport."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest

from aligner_proxy.core.http import (
    ExchangeError,
    ExchangeTimeoutError,
    OutboundClient,
    RetryPolicy,
    UnreachableError,
    parse_retry_after,
    send_with_retries,
    stream_with_retries,
)

URL = "http://up.test/v1/completions"
FAST = RetryPolicy(max_retries=2, backoff_s=0.001, max_backoff_s=0.001, deadline_s=30.0)
Step = Callable[[httpx.Request], httpx.Response]


class Scripted:
    """A transport handler that plays one step per request and counts the requests."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return step(request)


def status(code: int, **headers: str) -> Step:
    return lambda request: httpx.Response(code, json={"error": {"message": f"status {code}"}}, headers=headers)


def fail(error: type[httpx.TransportError]) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    return step


OK = status(200)


async def send(handler: Scripted, policy: RetryPolicy = FAST) -> httpx.Response:
    async with OutboundClient(transport=httpx.MockTransport(handler), headers={"Authorization": "Bearer sk-k"}) as c:
        return await send_with_retries(c, lambda: c.build_request("POST", URL, json={"prompt": "p"}), policy)


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_a_request_that_was_never_sent_is_retried(error: type[httpx.TransportError]) -> None:
    handler = Scripted(fail(error), fail(error), OK)
    response = await send(handler)
    assert response.status_code == 200 and handler.calls == 3


@pytest.mark.parametrize("code", [429, 502, 503, 504])
async def test_not_now_answers_are_retried(code: int) -> None:
    handler = Scripted(status(code), OK)
    response = await send(handler)
    assert response.status_code == 200 and handler.calls == 2


@pytest.mark.parametrize("code", [400, 401, 404, 408, 409, 422, 500, 501])
async def test_other_error_answers_are_returned_after_one_request(code: int) -> None:
    handler = Scripted(status(code), OK)
    response = await send(handler)
    assert response.status_code == code and handler.calls == 1
    assert response.json() == {"error": {"message": f"status {code}"}}  # the body is there for the caller's message


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (httpx.ReadError, ExchangeError),
        (httpx.WriteError, ExchangeError),
        (httpx.RemoteProtocolError, ExchangeError),
        (httpx.ReadTimeout, ExchangeTimeoutError),
        (httpx.WriteTimeout, ExchangeTimeoutError),
    ],
)
async def test_an_error_after_the_request_may_have_been_sent_is_not_retried(
    error: type[httpx.TransportError], raised: type[ExchangeError]
) -> None:
    handler = Scripted(fail(error), OK)
    with pytest.raises(raised) as caught:
        await send(handler)
    assert handler.calls == 1 and caught.value.attempts == 1
    assert isinstance(caught.value.__cause__, error) and caught.value.url == URL


async def test_when_retries_run_out_the_last_answer_or_error_comes_back() -> None:
    handler = Scripted(status(503))
    response = await send(handler)
    assert response.status_code == 503 and handler.calls == 3
    assert response.json()["error"]["message"] == "status 503"  # still readable after the retries

    handler = Scripted(fail(httpx.ConnectError))
    with pytest.raises(UnreachableError, match=f"cannot reach {URL}") as caught:
        await send(handler)
    assert handler.calls == 3 and caught.value.attempts == 3
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "sk-k" not in str(caught.value)

    async with httpx.AsyncClient(transport=httpx.MockTransport(Scripted(fail(httpx.ConnectError)))) as client:
        with pytest.raises(UnreachableError) as caught:
            await send_with_retries(client, lambda: client.build_request("GET", "http://me:pw@up.test/v1"), FAST)
    assert caught.value.url == "http://up.test/v1" and "pw" not in str(caught.value)

    handler = Scripted(status(503))
    assert (await send(handler, RetryPolicy(max_retries=0))).status_code == 503 and handler.calls == 1


async def test_retry_after_in_seconds_is_waited_for() -> None:
    handler = Scripted(status(429, **{"Retry-After": "1"}), OK)
    start = time.monotonic()
    response = await send(handler)
    assert response.status_code == 200 and handler.calls == 2
    assert time.monotonic() - start >= 0.9  # the backoff alone would have been a millisecond


async def test_retry_after_beyond_the_deadline_gives_the_answer_back_at_once() -> None:
    handler = Scripted(status(503, **{"Retry-After": "3600"}), OK)
    start = time.monotonic()
    response = await send(handler, RetryPolicy(max_retries=5, deadline_s=2.0))
    assert response.status_code == 503 and handler.calls == 1
    assert time.monotonic() - start < 60  # it did not sleep the hour (nor up to the deadline and try again)


async def test_retry_after_is_read_only_where_it_is_defined() -> None:
    # A 502's Retry-After is not the server's own word: the tiny backoff applies, not the hour.
    handler = Scripted(status(502, **{"Retry-After": "3600"}), OK)
    response = await send(handler, RetryPolicy(max_retries=1, backoff_s=0.001, deadline_s=30.0))
    assert response.status_code == 200 and handler.calls == 2


def test_retry_after_values() -> None:
    now = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0  # a date in the past: now
    for garbled in [None, "", "soon", "-5", "nan", "inf"]:
        assert parse_retry_after(garbled) is None


async def test_the_deadline_bounds_all_attempts() -> None:
    handler = Scripted(fail(httpx.ConnectError))
    policy = RetryPolicy(max_retries=10_000, backoff_s=0.02, max_backoff_s=0.02, deadline_s=0.3)
    start = time.monotonic()
    with pytest.raises(UnreachableError) as caught:
        await send(handler, policy)
    assert 1 < handler.calls == caught.value.attempts < 10_001
    assert time.monotonic() - start < 30  # loose: the point is that it stopped, not how fast


def test_a_policy_that_cannot_work_is_refused() -> None:
    for bad in [{"max_retries": -1}, {"backoff_s": -1.0}, {"deadline_s": 0.0}]:
        with pytest.raises(ValueError, match="invalid retry policy"):
            RetryPolicy(**bad)  # type: ignore[arg-type]


async def test_a_stream_retries_its_head_but_never_its_body() -> None:
    async def body_that_breaks(request: httpx.Request) -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        raise httpx.ReadError("connection reset", request=request)

    handler = Scripted(status(503), lambda request: httpx.Response(200, content=body_that_breaks(request)))
    lines: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(httpx.ReadError):
            async with stream_with_retries(client, lambda: client.build_request("POST", URL), FAST) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    lines.append(line)
    assert lines == ["data: one", ""] and handler.calls == 2  # the 503 head was retried, the broken body was not
    assert response.is_closed


async def test_a_stream_hands_back_an_error_answer_with_a_readable_body() -> None:
    handler = Scripted(status(404))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        async with stream_with_retries(client, lambda: client.build_request("POST", URL), FAST) as response:
            await response.aread()
            assert response.status_code == 404 and response.json()["error"]["message"] == "status 404"
    assert handler.calls == 1 and response.is_closed


# ----------------------------------------------------------------- OutboundClient


def cookie_setter(seen: list[str | None]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, json={}, headers={"set-cookie": "session=user-a; Path=/"})

    return handler


@pytest.mark.parametrize("client_class", [httpx.AsyncClient, OutboundClient])
async def test_an_upstream_cookie_is_never_replayed_on_the_next_request(client_class: type[httpx.AsyncClient]) -> None:
    seen: list[str | None] = []
    async with client_class(transport=httpx.MockTransport(cookie_setter(seen))) as client:
        for _ in range(2):
            await client.post(URL, json={})
    replayed = seen[1] is not None
    # httpx's own client keeps the cookie (what the override exists to prevent); the outbound client does not.
    assert replayed is (client_class is httpx.AsyncClient)


async def test_the_outbound_client_still_routes_by_mounts_and_sets_its_timeouts() -> None:
    mounted: list[httpx.Request] = []

    def other(request: httpx.Request) -> httpx.Response:
        mounted.append(request)
        return httpx.Response(200, content=b"mounted")

    default = httpx.MockTransport(lambda request: httpx.Response(200, content=b"default"))
    mounts = {"http://other.test": httpx.MockTransport(other)}
    async with OutboundClient(transport=default, mounts=mounts, timeout=httpx.Timeout(7.0)) as client:
        assert (await client.send(httpx.Request("GET", "http://other.test/x"))).content == b"mounted"
        assert (await client.get(URL)).content == b"default"
    assert mounted[0].extensions["timeout"]["read"] == 7.0  # a request built by hand gets the client's timeouts


class Chunks(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in (b"mo", b"ved"):
            yield part


async def test_the_outbound_client_returns_a_redirect_as_it_came_and_reads_bodies_unless_streaming() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://elsewhere.test/"}, stream=Chunks())

    async with OutboundClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.post(URL, json={})
        assert response.status_code == 302 and response.content == b"moved" and response.is_closed
        async with client.stream("POST", URL, json={}) as streamed:
            assert not streamed.is_stream_consumed
            assert await streamed.aread() == b"moved"


async def test_a_transport_error_from_the_outbound_client_names_its_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")  # raised without its request, as httpcore's mapping does

    async with OutboundClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post(URL, json={})
    assert caught.value.request.url == URL


async def test_a_closed_outbound_client_refuses_to_send() -> None:
    client = OutboundClient(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.get(URL)
