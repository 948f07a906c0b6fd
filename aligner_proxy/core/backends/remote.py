"""Any OpenAI-compatible ``/v1/completions`` server as a text generator.

Use it to run the corrector (or a raw-text upstream) out of process, e.g. an
Aligner served by ``vllm serve aligner/aligner-7b-v1.0``. Each prompt is one
request, issued concurrently under a semaphore: list prompts are not accepted
by every server, and per-prompt requests keep errors and usage per prompt.
Requests are retried under :mod:`aligner_proxy.core.http`'s rule; any failure
left raises a :class:`~aligner_proxy.core.backends.BackendError` subclass.

Token accounting without a local tokenizer is an estimate of 4 characters per
token (OpenAI's rule of thumb for English); pass ``tokenizer=`` (a local path
or Hub id of the served model's tokenizer) for exact counts and truncation.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx

from aligner_proxy.core.backends import BackendConnectionError, BackendResponseError
from aligner_proxy.core.generation import FinishReason, Generation, GenerationParams
from aligner_proxy.core.http import (
    IncompleteStreamError,
    RetryPolicy,
    SendError,
    StreamDeadlineError,
    make_client,
    send_with_retries,
    sse_data,
    stream_with_retries,
)
from aligner_proxy.core.redact import redact_text, redact_url

CHARS_PER_TOKEN = 4


class RemoteCompletionsGenerator:
    """A :class:`~aligner_proxy.core.generation.TextGenerator` over HTTP.

    ``base_url`` includes the API prefix, as in the OpenAI SDK
    (``http://host:8000/v1``). The API key is sent as a bearer token and never
    logged or shown in ``repr``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_concurrency: int = 16,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        retry_deadline_s: float = 30.0,
        deadline_s: float = 300.0,
        tokenizer: str | Path | None = None,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = make_client(
            base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_concurrency,
            transport=transport,
        )
        self._model = model
        self._api_key = api_key  # only to scrub it from the server's error messages
        self.deadline_s = deadline_s  # one completion or stream, retries and every byte of the body included
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.retry = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s, deadline_s=retry_deadline_s)
        self._extra_body = dict(extra_body or {})
        self._tokenizer_spec = tokenizer
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"RemoteCompletionsGenerator(base_url={redact_url(str(self._client.base_url))!r}, model={self._model!r})"

    @property
    def model_id(self) -> str:
        return self._model

    # -- generation

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        return list(await asyncio.gather(*(self._complete(prompt, params) for prompt in prompts)))

    async def _complete(self, prompt: str, params: GenerationParams) -> Generation:
        body = self._body(prompt, params, stream=False)
        async with self._semaphore:
            try:
                async with asyncio.timeout(self.deadline_s):
                    response = await send_with_retries(self._client, lambda: self._request(body), self.retry)
            except SendError as error:
                raise BackendConnectionError(str(error)) from error
            except TimeoutError as error:
                raise BackendConnectionError(f"{self._url} took over {self.deadline_s:g} s") from error
        if response.status_code != 200:
            raise _response_error(response.status_code, response.text, self._api_key)
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = str(choice["text"])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise BackendResponseError(f"malformed completion from {self._url}: {error!r}") from error
        usage = payload.get("usage") or {}
        return Generation(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", self.count_tokens(prompt))),
            completion_tokens=int(usage.get("completion_tokens", self.count_tokens(text))),
            finish_reason=_finish_reason(choice.get("finish_reason")),
        )

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[str, None]:
        """Yield text deltas from the server's SSE stream until ``data: [DONE]``."""
        body = self._body(prompt, params, stream=True)
        async with self._semaphore:
            try:
                async with stream_with_retries(self._client, lambda: self._request(body), self.retry) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _response_error(response.status_code, response.text, self._api_key)
                    async for data in sse_data(response, deadline=time.monotonic() + self.deadline_s):
                        delta = _stream_delta(data)
                        if delta:
                            yield delta
            except SendError as error:
                raise BackendConnectionError(str(error)) from error
            except IncompleteStreamError as error:
                raise BackendConnectionError(f"the stream from {self._url} was cut short: {error}") from error
            except StreamDeadlineError as error:
                raise BackendConnectionError(f"the stream from {self._url} took over {self.deadline_s:g} s") from error
            except httpx.TransportError as error:
                raise BackendConnectionError(f"stream from {self._url} broke: {error!r}") from error

    def _body(self, prompt: str, params: GenerationParams, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self._extra_body,
            "model": self._model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": stream,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # a vLLM extension of the completions API
        return body

    def _request(self, body: dict[str, Any]) -> httpx.Request:
        return self._client.build_request("POST", "completions", json=body)

    @property
    def _url(self) -> str:
        return redact_url(str(self._client.base_url.join("completions")))

    # -- tokens

    def count_tokens(self, text: str) -> int:
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        from aligner_proxy.core.backends.tokenizer import count_tokens

        return count_tokens(tokenizer, text)

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            if max_tokens <= 0:
                return ""
            chars = max_tokens * CHARS_PER_TOKEN
            return text[:chars] if keep == "head" else text[-chars:]
        from aligner_proxy.core.backends.tokenizer import truncate_tokens

        return truncate_tokens(tokenizer, text, max_tokens, keep)

    @property
    def special_tokens(self) -> list[str]:
        """The corrector's special tokens when its tokenizer is given (``tokenizer=``), to neutralise them in
        untrusted text; without it the prompt renderer still breaks the common ones and any ``<|name|>``."""
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            return []
        from aligner_proxy.core.backends.tokenizer import special_token_strings

        return special_token_strings(tokenizer)

    def _local_tokenizer(self) -> Any:
        if self._tokenizer is None and self._tokenizer_spec is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_spec))
        return self._tokenizer

    async def aclose(self) -> None:
        await self._client.aclose()


def _finish_reason(value: object) -> FinishReason:
    return "length" if value == "length" else "stop"


def _stream_delta(data: str) -> str:
    try:
        chunk = json.loads(data)
    except ValueError as error:
        raise BackendResponseError(f"malformed stream chunk: {data[:200]!r}") from error
    if isinstance(chunk, dict) and "error" in chunk:
        raise BackendResponseError(f"server error in stream: {_error_message(chunk)}")
    try:
        return str(chunk["choices"][0].get("text") or "") if chunk["choices"] else ""
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise BackendResponseError(f"malformed stream chunk: {data[:200]!r}") from error


def _response_error(status: int, body: str, api_key: str | None) -> BackendResponseError:
    try:
        message = _error_message(json.loads(body))
    except ValueError:
        message = body[:500]
    message = redact_text(message, [api_key])
    return BackendResponseError(f"completions server answered {status}: {message}", status_code=status)


def _error_message(payload: object) -> str:
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(payload)
