"""Faults of a misbehaving upstream, end to end through the proxy: each gets a bounded, honest answer.

A fault-injecting upstream (the fault is named in the question) behind the proxy with the keyword scorer,
a 1 s total upstream deadline and a 0.5 s read timeout. Every case must finish well inside a few seconds
(a hang fails the client's timeout), never with a 500, and a stream must end with ``data: [DONE]``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from aligner_proxy.core.heuristic import KeywordCostScorer
from tests.proxy.fakes import serve
from tests.proxy.helpers import MODEL, running_proxy

ANSWER = "Knead the dough, let it rise, bake at 220 C."


def chunk(text: str) -> str:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "up"}
    body["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return f"data: {json.dumps(body)}\n\n"


def whole(text: str) -> dict[str, object]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "up", "choices": [choice]}


def faulty_upstream() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        fault = body["messages"][-1]["content"]
        stream = body.get("stream", False)

        async def drip() -> AsyncIterator[str]:
            for piece in chunk(ANSWER) if stream else json.dumps(whole(ANSWER)):
                await asyncio.sleep(0.2)
                yield piece

        async def events(parts: list[str]) -> AsyncIterator[str]:
            for part in parts:
                yield part

        if fault == "drip":
            return StreamingResponse(drip(), media_type="text/event-stream" if stream else "application/json")
        if fault == "stall":
            await asyncio.sleep(30)
        if fault == "no-done":
            return StreamingResponse(events([chunk("Knead the"), chunk(" dough")]), media_type="text/event-stream")
        if fault == "error-mid-stream":
            error = {"error": {"message": "engine crashed", "type": "server_error", "code": "engine_dead"}}
            parts = [chunk("Knead"), f"data: {json.dumps(error)}\n\n"]
            return StreamingResponse(events(parts), media_type="text/event-stream")
        if fault == "empty-choices":
            return JSONResponse({**whole(ANSWER), "choices": []})
        if fault == "huge":
            return JSONResponse(whole("Bread. " * 1_500_000))  # ~10 MB
        return JSONResponse(whole(ANSWER))

    return app


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with (
        serve(faulty_upstream()) as upstream,
        running_proxy(
            upstream,
            scorer=KeywordCostScorer(),
            upstream_deadline_s=1.0,
            upstream_timeout_s=0.5,
            upstream_retries=0,
        ) as url,
    ):
        yield url


def ask(url: str, fault: str, *, stream: bool) -> tuple[httpx.Response, float]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": fault}], "stream": stream}
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=15)
    return response, time.monotonic() - started


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("drip", 504, None), ("stall", 504, "upstream_timeout"), ("empty-choices", 200, None), ("huge", 200, None)],
)
def test_whole_answers(proxy: str, fault: str, status: int, code: str | None) -> None:
    response, took = ask(proxy, fault, stream=False)
    assert response.status_code == status and took < 5.0
    if status >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert code is None or response.json()["error"]["code"] == code
    else:
        assert response.json()["aligner"]["status"] in ("passed", "skipped")


@pytest.mark.parametrize(
    ("fault", "message"),
    [("drip", "took over 1 s"), ("no-done", "cut short"), ("error-mid-stream", "engine crashed")],
)
def test_streams_end_in_an_error_chunk_then_done(proxy: str, fault: str, message: str) -> None:
    response, took = ask(proxy, fault, stream=True)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert took < 5.0 and events[-1] == "[DONE]"
    errors = [json.loads(e)["error"] for e in events[:-1] if "error" in json.loads(e)]
    assert len(errors) == 1 and message in errors[0]["message"]
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if "choices" in json.loads(e)
    )
    assert ANSWER not in text  # nothing incomplete passed off as the answer


def test_a_healthy_request_still_works_between_faults(proxy: str) -> None:
    response, _ = ask(proxy, "fine", stream=False)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == ANSWER
