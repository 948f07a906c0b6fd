"""The connection layer under the outbound client: httpx's own pool, or aiohttp's behind httpx's API.

Every outbound caller keeps httpx's API (timeouts, streaming, the retry rule in
:mod:`aligner_proxy.core.http`); only the transport that moves the bytes is a
choice. httpx's pure-Python pool costs more CPU per request than aiohttp's
connector, which matters when the proxy forwards hundreds of requests a second
(``bench/upstream_client.py`` measures both; docs/benchmarks.md has the
numbers). ``httpx-aiohttp`` (by httpx's maintainer; the ``openai`` SDK's own
aiohttp option) provides the transport; this module adds one thing it lacks:
the retry rule's distinction between a request that never left and one that
may have reached the server.
"""

from __future__ import annotations

from typing import Literal

import httpx

TransportKind = Literal["httpx", "aiohttp"]


def make_transport(kind: TransportKind, *, max_connections: int) -> httpx.AsyncBaseTransport | None:
    """The transport for :func:`~aligner_proxy.core.http.make_client`; ``None`` is httpx's own pool.

    ``aiohttp`` needs the ``httpx-aiohttp`` package (a dependency of this
    project); its pool holds at most ``max_connections`` connections, like httpx's.
    """
    if kind == "httpx":
        return None
    if kind != "aiohttp":
        raise ValueError(f"unknown HTTP transport {kind!r}; expected 'httpx' or 'aiohttp'")
    return _aiohttp_transport(max_connections)


def _aiohttp_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    class SentAwareAiohttpTransport(AiohttpTransport):
        """``httpx-aiohttp`` maps every ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``,
        a server that hung up after reading the request included. The retry rule would take that for
        "never sent" and send a second generation; here only a failure to *open* the connection stays
        a connect error, and the rest become ``httpx.ReadError`` (may have been acted on: not retried)."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            try:
                return await super().handle_async_request(request)
            except httpx.ConnectTimeout as exc:
                cause = exc.__cause__
                if cause is None or isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
                    raise
                raise httpx.ReadError(str(exc), request=request) from cause

    return SentAwareAiohttpTransport(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )
