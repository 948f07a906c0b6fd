"""A small async client for OpenAI-compatible chat endpoints: the proxy, an upstream, a judge.

One ``httpx.AsyncClient`` per endpoint, with explicit timeouts and a
connection limit equal to the harness's concurrency. Connection errors, 429
and 5xx are retried with exponential backoff; anything else becomes a
:class:`~evals.errors.TargetError` carrying the server's error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import httpx

from evals.errors import TargetError

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


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
        concurrency: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
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
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                if last:
                    raise TargetError(f"{url}: {type(exc).__name__}: {exc}") from None
                logger.warning("%s: %s, retrying", url, type(exc).__name__)
            else:
                if response.status_code < 400:
                    try:
                        data = response.json()
                    except ValueError:
                        raise TargetError(f"{url}: answered non-JSON ({response.text[:200]!r})") from None
                    if not isinstance(data, dict):
                        raise TargetError(f"{url}: answered {type(data).__name__}, not a JSON object")
                    return data
                if response.status_code not in _RETRY_STATUS or last:
                    raise TargetError(f"{url}: HTTP {response.status_code}: {_error_message(response)}")
                logger.warning("%s: HTTP %d, retrying", url, response.status_code)
            await asyncio.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")

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
