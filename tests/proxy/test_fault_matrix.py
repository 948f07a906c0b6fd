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


def faulty_upstream(calls: dict[str, int]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        fault = body["messages"][-1]["content"]
        stream = body.get("stream", False)
        calls[fault] = calls.get(fault, 0) + 1

        async def reset() -> AsyncIterator[str]:
            yield json.dumps(whole(ANSWER))[:40]
            raise ConnectionResetError("the upstream died mid-body")

        async def drip() -> AsyncIterator[str]:
            for piece in chunk(ANSWER) if stream else json.dumps(whole(ANSWER)):
                await asyncio.sleep(0.2)
                yield piece

        async def events(parts: list[str]) -> AsyncIterator[str]:
            for part in parts:
                yield part

        if fault == "reset":
            return StreamingResponse(reset(), media_type="text/event-stream" if stream else "application/json")
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


UPSTREAM_CALLS: dict[str, int] = {}
"""Requests the faulty upstream received, by fault."""


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with (
        serve(faulty_upstream(UPSTREAM_CALLS)) as upstream,
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


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_reset_mid_body_is_answered_once_and_never_replayed(proxy: str, stream: bool) -> None:
    """The upstream may have generated: a second POST would pay for a second generation nobody reads."""
    before = UPSTREAM_CALLS.get("reset", 0)
    response, took = ask(proxy, "reset", stream=stream)
    assert took < 5.0 and UPSTREAM_CALLS["reset"] - before == 1
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and any('"error"' in e for e in events[:-1])
    else:
        assert response.status_code in (502, 503) and response.json()["error"]["type"] == "upstream_error"


def test_a_healthy_request_still_works_between_faults(proxy: str) -> None:
    response, _ = ask(proxy, "fine", stream=False)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == ANSWER


# ------------------------------------------------------------------ a faulty corrector


def completion_chunk(text: str) -> str:
    body = {"id": "k", "object": "text_completion", "created": 0, "model": "aligner"}
    body["choices"] = [{"index": 0, "text": text, "finish_reason": None}]
    return f"data: {json.dumps(body)}\n\n"


CORRECTED = "Knead well, proof for an hour, bake at 220 C."


def faulty_corrector() -> FastAPI:
    """An OpenAI-compatible completions server; the fault is named in the question inside the prompt."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(request: Request) -> Response:
        body = await request.json()
        prompt, stream = body["prompt"], body.get("stream", False)
        fault = next((f for f in CORRECTOR_FAULTS if f"fault-{f}" in prompt), "none")

        async def events(parts: list[str], delay_s: float = 0.0) -> AsyncIterator[str]:
            for part in parts:
                await asyncio.sleep(delay_s)
                yield part

        if fault == "stall":
            await asyncio.sleep(30)
        if fault == "429":
            return JSONResponse({"error": {"message": "busy"}}, status_code=429, headers={"retry-after": "0"})
        if fault == "drip":
            parts = [completion_chunk(word + " ") for word in CORRECTED.split()] + ["data: [DONE]\n\n"]
            if not stream:
                text = json.dumps({"choices": [{"index": 0, "text": CORRECTED, "finish_reason": "stop"}]})
                parts = list(text)
            return StreamingResponse(events(parts, 0.3), media_type="text/event-stream")
        if fault == "cut":
            if stream:
                return StreamingResponse(events([completion_chunk("Knead")]), media_type="text/event-stream")
            return Response('{"choices": [{"index": 0, "te', media_type="application/json")
        if fault == "empty":
            if stream:
                return StreamingResponse(events(["data: [DONE]\n\n"]), media_type="text/event-stream")
            return JSONResponse({"choices": []})
        if stream:
            return StreamingResponse(
                events([completion_chunk(CORRECTED), "data: [DONE]\n\n"]), media_type="text/event-stream"
            )
        return JSONResponse({"choices": [{"index": 0, "text": CORRECTED, "finish_reason": "stop"}]})

    return app


CORRECTOR_FAULTS = ("stall", "429", "drip", "cut", "empty")


@pytest.fixture(scope="module")
def corrected_proxy() -> Iterator[str]:
    from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator
    from tests.proxy.fakes import fake_upstream_app

    with serve(fake_upstream_app()) as upstream, serve(faulty_corrector()) as corrector:
        generator = RemoteCompletionsGenerator(
            corrector + "/v1", "aligner", timeout_s=1.0, deadline_s=1.0, max_retries=1, retry_deadline_s=1.0
        )
        with running_proxy(upstream, scorer=KeywordCostScorer(), generator=generator, alignment_timeout_s=1.5) as url:
            yield url


def correct(url: str, fault: str, *, stream: bool, failure_policy: str) -> tuple[httpx.Response, float]:
    options = {"mode": "always", "block": False, "failure_policy": failure_policy}
    question = f"fault-{fault}: how do I bake bread?"
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "stream": stream, "aligner": options}
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=15)
    return response, time.monotonic() - started


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def streamed_text(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events[:-1] if '"choices"' in e]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def errors_in(events: list[str]) -> list[dict[str, object]]:
    return [json.loads(e)["error"] for e in events[:-1] if '"error"' in e and "error" in json.loads(e)]


@pytest.mark.parametrize("fault", CORRECTOR_FAULTS)
def test_whole_answers_follow_the_failure_policy_on_corrector_faults(corrected_proxy: str, fault: str) -> None:
    """fail_open: the original, 'unchecked', with the failure's kind; fail_closed: a 503. Within a bound."""
    opened, took_open = correct(corrected_proxy, fault, stream=False, failure_policy="fail_open")
    closed, took_closed = correct(corrected_proxy, fault, stream=False, failure_policy="fail_closed")
    assert max(took_open, took_closed) < 6.0
    aligner = opened.json()["aligner"]
    assert opened.status_code == 200 and aligner["status"] == "unchecked" and aligner["choices"][0]["error"]
    assert CORRECTED not in opened.text
    assert closed.status_code == 503 and closed.json()["error"]["type"] == "alignment_error"


@pytest.mark.parametrize("fault", ["stall", "429", "empty"])
def test_streams_follow_the_failure_policy_when_the_corrector_fails_before_its_first_piece(
    corrected_proxy: str, fault: str
) -> None:
    """fail_open: the original streamed (an empty correction: the original judged on its own cost, with the
    reason); fail_closed: an error chunk and no text. Every stream ends with [DONE]."""
    opened, took_open = correct(corrected_proxy, fault, stream=True, failure_policy="fail_open")
    closed, took_closed = correct(corrected_proxy, fault, stream=True, failure_policy="fail_closed")
    assert max(took_open, took_closed) < 6.0
    events, closed_events = sse_data(opened), sse_data(closed)
    assert events[-1] == "[DONE]" == closed_events[-1]
    aligner = next(json.loads(e)["aligner"] for e in events if '"aligner"' in e)
    assert aligner["status"] == ("passed" if fault == "empty" else "unchecked") and aligner["choices"][0]["error"]
    assert len(errors_in(closed_events)) == 1 and streamed_text(closed_events) == ""  # no text, then the error


@pytest.mark.parametrize("fault", ["drip", "cut"])
@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_a_correction_that_fails_mid_stream_ends_in_an_error_chunk(
    corrected_proxy: str, fault: str, policy: str
) -> None:
    """Text already sent cannot be taken back under any policy: the stream says it failed, then [DONE]."""
    response, took = correct(corrected_proxy, fault, stream=True, failure_policy=policy)
    events = sse_data(response)
    assert took < 6.0 and events[-1] == "[DONE]"
    [error] = errors_in(events)
    assert "mid-stream" in str(error["message"]) and "127.0.0.1" not in str(error["message"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_healthy_corrector_still_corrects(corrected_proxy: str, stream: bool) -> None:
    response, _ = correct(corrected_proxy, "none", stream=stream, failure_policy="fail_closed")
    assert response.status_code == 200 and CORRECTED in response.text
