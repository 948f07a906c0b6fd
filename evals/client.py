"""A small async client for OpenAI-compatible chat endpoints: the proxy, an upstream, a judge.

One ``httpx.AsyncClient`` per endpoint, with explicit timeouts and a
connection limit equal to the harness's concurrency. Requests are retried under
:mod:`aligner_proxy.core.http`'s rule; any failure left becomes a
:class:`~evals.errors.TargetError` carrying the server's error message.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from aligner_proxy.core.http import RetryPolicy, SendError, make_client, send_with_retries
from evals.errors import TargetError


def api_key_from_env(name: str | None) -> str | None:
    """The bearer key in environment variable ``name`` (read here, at the edge, once per endpoint)."""
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise TargetError(f"environment variable {name} (api_key_env) is not set")
    return value


class ChatEndpoint:
    """``POST {base_url}/chat/completions`` and ``GET {base_url}/models`` with retries."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 2,
        retry_deadline_s: float = 120.0,
        concurrency: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = RetryPolicy(max_retries=retries, backoff_s=1.0, max_backoff_s=30.0, deadline_s=retry_deadline_s)
        self._client = make_client(
            self.base_url, api_key=api_key, timeout_s=timeout_s, connect_timeout_s=10.0, max_connections=concurrency
        )

    async def models(self) -> list[str]:
        data = await self._request("GET", "/models")
        return [str(card["id"]) for card in data.get("data", []) if isinstance(card, dict) and "id" in card]

    async def chat(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """The response JSON and the request's wall-clock latency in ms (retries included)."""
        start = time.perf_counter()
        data = await self._request("POST", "/chat/completions", body)
        return data, (time.perf_counter() - start) * 1000

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = await send_with_retries(
                self._client, lambda: self._client.build_request(method, path, json=body), self.retry
            )
        except SendError as exc:
            raise TargetError(f"{url}: {type(exc.__cause__).__name__}: {exc.__cause__}") from None
        if response.status_code >= 400:
            raise TargetError(f"{url}: HTTP {response.status_code}: {_error_message(response)}")
        try:
            data = response.json()
        except ValueError:
            raise TargetError(f"{url}: answered non-JSON ({response.text[:200]!r})") from None
        if not isinstance(data, dict):
            raise TargetError(f"{url}: answered {type(data).__name__}, not a JSON object")
        return data

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return response.text[:300]
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error or response.text[:300])
