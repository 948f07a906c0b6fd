"""Outbound HTTP with one retry rule, shared by every client this project runs.

The proxy's upstream, the remote corrector, the batch tool's proxy backend and
the evals' chat client all send through :func:`send_with_retries` (or its
streaming form :func:`stream_with_retries`), so a request is retried in the
same cases whichever of them sends it:

- **Retried**: a connect error, where the request was never sent
  (``httpx.ConnectError``, ``ConnectTimeout``, ``PoolTimeout``), and the answers
  HTTP 429, 502, 503 and 504, which say "not now" or "the server behind me is
  down" without the request having been acted on.
- **Never retried**: any other 4xx (the request itself is wrong), HTTP 500 (the
  server may have done part of the work and failed on it), and any error after
  the request body may have reached the server: read and write errors, remote
  protocol errors, read and write timeouts. Generation is not idempotent: a
  second attempt can cost a second generation, or a second correction, for an
  answer nobody reads.
- **Wait**: a 429 or 503 that carries ``Retry-After`` (delay-seconds or an
  HTTP date, RFC 9110 §10.2.3) waits that long; otherwise exponential backoff
  with full jitter, a delay drawn uniformly from ``[0, min(max_backoff_s,
  backoff_s * 2**n))`` before retry ``n + 1`` (the "full jitter" of AWS's
  *Exponential Backoff And Jitter*, 2015), which spreads clients that failed
  together.
- **Deadline**: ``deadline_s`` bounds all attempts and waits together. A wait
  that would end at or past the deadline is not taken, and neither are retries
  beyond ``max_retries``: the last error is raised at once (or the last
  response returned, see below). An attempt already under way runs under the
  client's own ``httpx.Timeout``; the deadline decides whether another starts.

What callers get: a response with any status, the last retryable one included,
so each caller reads an error body in its own way and maps it to its own error
type; or a :class:`SendError` when no response head came back, whose
subclasses say whether the request may have reached the server. The original
httpx exception is the ``__cause__``. Streaming retries only the wait for the
response head; once the body is being read nothing is sent again, and a broken
body surfaces as the httpx error it is.

Messages name the URL through :func:`~aligner_proxy.core.redact.redact_url`
(no user info, no secret query values), never headers, so a bearer key or a
password cannot leak into a log line or an error body.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from aligner_proxy.core.redact import redact_url

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that say the request was not acted on and may succeed later."""

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Answers whose ``Retry-After`` header is honoured (RFC 9110 defines it for these)."""

NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before any byte of the request left this process: safe to retry."""


class OutboundClient(httpx.AsyncClient):
    """httpx's client, sending each request once and as built: no cookie jar, no auth flow, no redirects.

    httpx's own ``send`` passes every response through a cookie jar (``http.cookiejar`` behind urllib
    request and response adapters), an auth generator and a redirect loop. None of it applies to the
    calls made here: an upstream's ``Set-Cookie`` must not be kept by a proxy and replayed on other
    clients' requests, the only credential is the bearer header set on the client, and a redirected
    generation request is an error to report, not to follow. Profiled in mode ``off``, those layers
    were about a tenth of the proxy's CPU per forwarded request (docs/benchmarks.md), so ``send``
    goes straight to the transport instead. A caller that passes its own ``auth`` or asks for
    redirects gets httpx's full ``send``.
    """

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if auth is not httpx.USE_CLIENT_DEFAULT or follow_redirects is True or self.auth is not None:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if "timeout" not in request.extensions:  # a request built without build_request: the client's timeouts
            request.extensions = {**request.extensions, "timeout": self.timeout.as_dict()}
        # httpx's transport choice: mounts and environment proxies (HTTPS_PROXY) still apply.
        transport = self._transport_for_url(request.url)
        try:
            response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # what httpx's own send attaches; messages and handlers may read it
            raise
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


def make_client(
    base_url: str,
    *,
    api_key: str | None = None,
    timeout_s: float,
    connect_timeout_s: float = 5.0,
    max_connections: int = 16,
    max_keepalive: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> OutboundClient:
    """The pooled client every outbound caller uses: a bearer key if given (never logged: messages name
    URLs only), a read and a connect timeout, and a bounded pool (``max_keepalive`` defaults to all)."""
    return OutboundClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections if max_keepalive is None else max_keepalive,
        ),
        transport=transport,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one request may be retried; the *which* is fixed by the module's rule."""

    max_retries: int = field(default=2, metadata={"help": "retries after the first attempt (0: send once)"})
    backoff_s: float = field(default=0.5, metadata={"help": "the first backoff's upper bound; doubles per retry"})
    max_backoff_s: float = field(default=8.0, metadata={"help": "cap on one backoff's upper bound"})
    deadline_s: float = field(default=60.0, metadata={"help": "all attempts and waits together, in seconds"})

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.deadline_s <= 0:
            raise ValueError(f"invalid retry policy: {self}")

    def backoff(self, retry: int) -> float:
        """The full-jitter delay before retry number ``retry`` (0 for the first retry)."""
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2**retry))


class SendError(Exception):
    """No response head came back. ``url`` has no credentials; ``attempts`` counts the requests tried."""

    def __init__(self, message: str, *, url: str, attempts: int) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


class UnreachableError(SendError):
    """The request was never sent: every attempt failed to connect (retried until the policy ran out)."""


class ExchangeError(SendError):
    """The request may have reached the server and the connection broke before a response head (not retried)."""


class ExchangeTimeoutError(ExchangeError):
    """The request may have reached the server and no response head came in time (not retried)."""


async def send_with_retries(
    client: httpx.AsyncClient,
    build_request: Callable[[], httpx.Request],
    policy: RetryPolicy,
    *,
    stream: bool = False,
) -> httpx.Response:
    """Send ``build_request()`` under the module's rule and return the last response, whatever its status.

    ``build_request`` is called once per attempt so every attempt sends a fresh
    request (e.g. ``lambda: client.build_request("POST", path, json=body)``).
    With ``stream=False`` the body is read; with ``stream=True`` the caller
    owns the open response and must close it (see :func:`stream_with_retries`).
    Raises :class:`UnreachableError`, :class:`ExchangeTimeoutError` or
    :class:`ExchangeError` when no response head came back.
    """
    deadline = time.monotonic() + policy.deadline_s
    attempt = 0
    while True:
        request = build_request()
        attempt += 1
        url = redact_url(str(request.url))  # a password or key in the URL stays out of messages
        response: httpx.Response | None = None
        error: httpx.TransportError | None = None
        try:
            response = await client.send(request, stream=stream)
        except NOT_SENT_ERRORS as exc:
            error = exc
        except httpx.TimeoutException as exc:
            raise ExchangeTimeoutError(f"{url} timed out: {exc!r}", url=url, attempts=attempt) from exc
        except httpx.TransportError as exc:
            raise ExchangeError(f"request to {url} failed: {exc!r}", url=url, attempts=attempt) from exc
        if response is not None and response.status_code not in RETRY_STATUSES:
            return response
        delay = _retry_after(response) if response is not None else None
        if delay is None:
            delay = policy.backoff(attempt - 1)
        if attempt > policy.max_retries or time.monotonic() + delay >= deadline:
            if response is not None:
                return response
            raise UnreachableError(f"cannot reach {url}: {error!r}", url=url, attempts=attempt) from error
        if response is not None:
            await response.aclose()
        why = f"HTTP {response.status_code}" if response is not None else type(error).__name__
        logger.warning("%s %s: %s; retry %d/%d in %.2f s", request.method, url, why, attempt, policy.max_retries, delay)
        await asyncio.sleep(delay)


@asynccontextmanager
async def stream_with_retries(
    client: httpx.AsyncClient, build_request: Callable[[], httpx.Request], policy: RetryPolicy
) -> AsyncIterator[httpx.Response]:
    """:func:`send_with_retries` for a streamed body, closing the response on exit.

    Only getting the response head is retried; an error while reading the body
    is raised as the httpx error it is, because by then the server has started
    generating and a second request would generate again.
    """
    response = await send_with_retries(client, build_request, policy, stream=True)
    try:
        yield response
    finally:
        await response.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    """The wait a 429 or 503 asks for, in seconds, or ``None`` where it asks for none we can read."""
    if response.status_code not in RETRY_AFTER_STATUSES:
        return None
    return parse_retry_after(response.headers.get("retry-after"))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` value as seconds from ``now``: delay-seconds or an HTTP date (RFC 9110 §10.2.3).

    A date in the past is 0; a value that is neither form is ``None`` (the
    caller falls back to its backoff rather than trusting a garbled header).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110's IMF-fixdate is always GMT
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class BodyTooLargeError(Exception):
    """A response body ran past the caller's byte limit; reading stopped there."""


async def read_body(response: httpx.Response, max_bytes: int) -> bytes:
    """An open (streamed) response's body, read up to ``max_bytes``.

    A server that answers with more than anyone asked for (an upstream sending gigabytes) is cut off
    at the limit with :class:`BodyTooLargeError` instead of filling the proxy's memory."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLargeError(f"the response body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class IncompleteStreamError(Exception):
    """A server-sent event stream ended without ``data: [DONE]``: what came is not the whole answer."""


class StreamDeadlineError(TimeoutError):
    """A stream ran past its total deadline (a server that drips one byte a second never trips a read timeout)."""


async def sse_data(
    response: httpx.Response, *, deadline: float | None = None, max_bytes: int | None = None
) -> AsyncIterator[str]:
    """The ``data:`` payloads of an OpenAI-style SSE stream, up to and without ``[DONE]``.

    ``deadline`` (a :func:`time.monotonic` instant) bounds the whole stream, not
    each read. A stream that ends without ``[DONE]`` raises
    :class:`IncompleteStreamError`: a truncated answer must never pass for a
    complete one. The timeout wraps each read, never a ``yield``, so it only
    ever cancels this generator's own wait."""
    lines = response.aiter_lines()
    received = 0
    while True:
        try:
            if deadline is None:
                line = await anext(lines)
            else:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    line = await anext(lines)
        except StopAsyncIteration:
            raise IncompleteStreamError("the stream ended before data: [DONE]") from None
        except TimeoutError:
            raise StreamDeadlineError("the stream ran past its deadline") from None
        received += len(line.encode("utf-8", "surrogatepass")) + 1  # bytes, as the limit says
        if max_bytes is not None and received > max_bytes:
            raise BodyTooLargeError(f"the stream exceeds {max_bytes} bytes")
        if not line.startswith("data:"):
            continue  # blank separators, comments, `event:` lines
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        yield data


def _loop_time(deadline: float) -> float:
    """A :func:`time.monotonic` instant on the event loop's clock (what ``asyncio.timeout_at`` takes)."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
