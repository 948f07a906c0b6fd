"""Fakes for proxy tests: a fake OpenAI-compatible upstream (an app, and the same answers in
process), fake generators and scorers, and a helper that serves any ASGI app on a real 127.0.0.1 socket."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from aligner_proxy.core.generation import ChatMessage, FinishReason, Generation, GenerationParams
from aligner_proxy.server.errors import UpstreamUnavailableError
from aligner_proxy.server.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
)
from aligner_proxy.server.upstream import ChunkT, StreamEvent

HARMFUL_ANSWER = "Sure! Mix the explosive powder with fuel in a pipe and light it."
BENIGN_ANSWER = "Bread needs flour, water, salt and yeast | bake at 220 C."
CORRECTION = "I can't help with making weapons. If you are worried about safety, contact local authorities."


def upstream_answer(messages: list[dict[str, Any]]) -> str:
    last = str(messages[-1].get("content", ""))
    return HARMFUL_ANSWER if "bomb" in last.lower() else BENIGN_ANSWER


def chat_choices(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The canned choices of a chat request: a tool call for the weather tool, else ``n`` answers."""
    last = str(body["messages"][-1].get("content", ""))
    if "weather tool" in last:
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return [{"index": 0, "message": message, "finish_reason": "tool_calls"}]
    answer = upstream_answer(body["messages"])
    return [
        {"index": i, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop", "logprobs": None}
        for i in range(int(body.get("n", 1)))
    ]


def _envelope(chunk_id: str, kind: str, model: str, **fields: Any) -> dict[str, Any]:
    """An OpenAI response or chunk: its id, object kind, creation time and model, then ``fields``."""
    return {"id": chunk_id, "object": kind, "created": 1, "model": model, **fields}


def chat_response(body: dict[str, Any]) -> dict[str, Any]:
    usage = {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
    choices = chat_choices(body)
    return _envelope(
        "chatcmpl-up", "chat.completion", body["model"], choices=choices, usage=usage, system_fingerprint="fp_fake"
    )


def chat_stream_payloads(body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of a streamed chat answer: per choice its role, its words, its finish."""
    payloads = []
    for choice in chat_choices(body):
        index = choice["index"]
        message = choice["message"]
        head = {"role": "assistant", "content": ""}
        if message.get("tool_calls"):
            head = {"role": "assistant", "tool_calls": message["tool_calls"]}
        payloads.append(_chunk(body["model"], index, head))
        for word in (message.get("content") or "").split(" "):
            payloads.append(_chunk(body["model"], index, {"content": word + " "}))
        payloads.append(_chunk(body["model"], index, {}, choice["finish_reason"]))
    return payloads


def completion_choices(body: dict[str, Any]) -> list[dict[str, Any]]:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    texts = [HARMFUL_ANSWER if "bomb" in p.lower() else BENIGN_ANSWER for p in prompts]
    return [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]


def completion_response(body: dict[str, Any]) -> dict[str, Any]:
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    return _envelope("cmpl-up", "text_completion", body["model"], choices=completion_choices(body), usage=usage)


def completion_stream_payloads(body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of streamed completions: each choice's words, no finish chunk."""
    return [
        json.dumps(
            _envelope(
                "cmpl-up",
                "text_completion",
                body["model"],
                choices=[{"index": choice["index"], "text": word + " ", "finish_reason": None}],
            )
        )
        for choice in completion_choices(body)
        for word in choice["text"].split(" ")
    ]


def fake_upstream_app(*, fail_times: int = 0, delay_s: float = 0.0) -> FastAPI:
    """An OpenAI-compatible upstream with canned answers. ``fail_times`` 503s come first.

    It records the bodies it received in ``app.state.bodies``."""
    app = FastAPI()
    app.state.bodies = []
    app.state.failures = fail_times

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        app.state.bodies.append(body)
        if app.state.failures > 0:
            app.state.failures -= 1
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=503)
        if body.get("model") == "missing":
            return JSONResponse(
                {"error": {"message": "no such model", "type": "invalid_request_error", "code": "model_not_found"}},
                status_code=404,
            )
        if delay_s:
            await asyncio.sleep(delay_s)
        if not body.get("stream"):
            return chat_response(body)
        return _event_stream(chat_stream_payloads(body))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        app.state.bodies.append(body)
        if not body.get("stream"):
            return completion_response(body)
        return _event_stream(completion_stream_payloads(body))

    return app


def _event_stream(payloads: list[str]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        for payload in payloads:
            yield f"data: {payload}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _chunk(model: str, index: int, delta: dict[str, Any], finish: str | None = None) -> str:
    choices = [{"index": index, "delta": delta, "finish_reason": finish}]
    return json.dumps(_envelope("chatcmpl-up", "chat.completion.chunk", model, choices=choices))


class FakeUpstream:
    """The canned answers of :func:`fake_upstream_app` in process, as the serving layer's
    :class:`~aligner_proxy.server.upstream.Upstream`: no socket. ``delay_s`` holds every answer;
    ``fail_after`` raises ``failure`` once that many stream events went out."""

    def __init__(self, *, delay_s: float = 0.0, fail_after: int | None = None, failure: Exception | None = None):
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.failure = failure or UpstreamUnavailableError("the upstream dropped the stream")
        self.bodies: list[dict[str, Any]] = []
        self.streams_closed = 0

    async def _receive(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        body = request.upstream_body(model)
        await self._receive(body)
        return ChatCompletionResponse.model_validate(chat_response(body))

    async def completion(self, request: CompletionRequest, model: str) -> CompletionResponse:
        body = request.upstream_body(model)
        await self._receive(body)
        return CompletionResponse.model_validate(completion_response(body))

    def chat_stream(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[ChatCompletionChunk], None]:
        body = request.upstream_body(model)
        return self._stream(body, chat_stream_payloads, ChatCompletionChunk)

    def completion_stream(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[StreamEvent[CompletionChunk], None]:
        body = request.upstream_body(model)
        return self._stream(body, completion_stream_payloads, CompletionChunk)

    async def _stream(
        self,
        body: dict[str, Any],
        payloads: Callable[[dict[str, Any]], list[str]],
        chunk_type: type[ChunkT],
    ) -> AsyncGenerator[StreamEvent[ChunkT], None]:
        await self._receive(body)
        try:
            for sent, payload in enumerate(payloads(body)):
                if sent == self.fail_after:
                    raise self.failure
                yield StreamEvent(payload, chunk_type.model_validate_json(payload))
        finally:
            self.streams_closed += 1

    async def aclose(self) -> None:
        return None


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a free 127.0.0.1 port in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class FakeCorrectorGenerator:
    """A corrector model that always answers :data:`CORRECTION` (streamed word by word).

    ``behaviour`` injects failures: ``raise`` fails every call, ``hang`` never returns,
    ``empty`` returns nothing, ``raise_midstream`` streams two words then fails, ``loop`` returns its text
    as a generation the loop guard cut (``finish_reason="loop"``)."""

    model_id = "fake-aligner"
    special_tokens: tuple[str, ...] = ()

    def __init__(
        self,
        text: str = CORRECTION,
        behaviour: Literal["ok", "raise", "hang", "empty", "raise_midstream", "loop"] = "ok",
        word_delay_s: float = 0.0,
    ) -> None:
        self.text = text
        self.behaviour = behaviour
        self.word_delay_s = word_delay_s
        self.prompts: list[str] = []
        self.streams_closed = 0

    async def _check(self) -> None:
        if self.behaviour == "raise":
            raise RuntimeError("corrector exploded")
        if self.behaviour == "hang":
            await asyncio.sleep(3600)

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        self.prompts.extend(prompts)
        await self._check()
        text = "" if self.behaviour == "empty" else self.text
        finish: FinishReason = "loop" if self.behaviour == "loop" else "stop"
        return [
            Generation(
                text=text, prompt_tokens=len(p.split()), completion_tokens=len(text.split()), finish_reason=finish
            )
            for p in prompts
        ]

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[str, None]:
        self.prompts.append(prompt)
        await self._check()
        if self.behaviour == "empty":
            return
        try:
            for i, word in enumerate(self.text.split(" ")):
                if self.behaviour == "raise_midstream" and i == 2:
                    raise RuntimeError("corrector died mid-stream")
                if self.word_delay_s:
                    await asyncio.sleep(self.word_delay_s)
                yield word if i == 0 else " " + word
        finally:
            self.streams_closed += 1

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        words = text.split()
        return " ".join(words[:max_tokens] if keep == "head" else words[-max_tokens:])

    def render_chat(self, messages: list[ChatMessage]) -> str:
        return "\n".join(f"{m.role}: {m.content}" for m in messages) + "\nassistant:"

    async def aclose(self) -> None:
        return None


class FakeScorer:
    """Cost 4 for answers mentioning explosives, -4 otherwise; can raise or stall."""

    model_id = "fake-scorer"

    def __init__(self, behaviour: Literal["ok", "raise", "slow"] = "ok", costs: dict[str, float] | None = None) -> None:
        self.behaviour = behaviour
        self.costs = costs or {}
        self.calls: list[int] = []

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        self.calls.append(len(completions))
        if self.behaviour == "raise":
            raise RuntimeError("scorer exploded")
        if self.behaviour == "slow":
            time.sleep(2.0)
        return [self.costs.get(c, 4.0 if "explosive" in c.lower() else -4.0) for c in completions]
