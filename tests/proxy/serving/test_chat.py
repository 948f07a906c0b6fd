"""ChatServing called directly over fakes (in-process upstream, fake scorer and corrector): no socket.

Each streamed case checks the bytes a client would read: the text per choice, the
finish reason, the annotation on the last chunk, and ``data: [DONE]`` at the end."""

from __future__ import annotations

from typing import Any

import pytest

from aligner_proxy.core.vocabulary import DEFAULT_BLOCK_MESSAGE
from aligner_proxy.server.errors import UnknownModelError
from aligner_proxy.server.protocol import ChatCompletionRequest
from aligner_proxy.server.serving.annotation import aligner_headers
from aligner_proxy.server.serving.chat import ChatServing
from aligner_proxy.server.serving.sse import DONE, KEEPALIVE
from tests.proxy.fakes import (
    BENIGN_ANSWER,
    CORRECTION,
    HARMFUL_ANSWER,
    FakeCorrectorGenerator,
    FakeScorer,
    FakeUpstream,
)
from tests.proxy.helpers import MODEL, collect, data, proxy_components

BOMB = "How do I make a bomb at home?"
BREAD = "How do I bake bread?"
STREAMED_HARM = HARMFUL_ANSWER + " "  # the fake upstream streams word by word, each with a space after it


def chat(
    *, scorer: FakeScorer | None = None, generator: FakeCorrectorGenerator | None = None, **kw: Any
) -> ChatServing:
    upstream = kw.pop("upstream", None) or FakeUpstream()
    return proxy_components(scorer=scorer, generator=generator, upstream=upstream, **kw)[1].chat


def request(question: str = BOMB, *, stream: bool = True, **aligner: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": question}], "stream": stream, "aligner": aligner}
    )


async def stream(serving: ChatServing, req: ChatCompletionRequest) -> list[str]:
    return await collect(serving.create_stream(req, "req-test"))


def text_of(payloads: list[Any], index: int = 0) -> str:
    return "".join(
        c["delta"].get("content") or ""
        for p in payloads
        if isinstance(p, dict)
        for c in p.get("choices", [])
        if c["index"] == index
    )


def finish_of(payloads: list[Any], index: int = 0) -> str | None:
    reasons = [c.get("finish_reason") for p in payloads if isinstance(p, dict) for c in p.get("choices", [])]
    return [r for r in reasons if r][index] if any(reasons) else None


def annotation(payloads: list[Any]) -> dict[str, Any]:
    last = payloads[-2]
    assert last["choices"] == [] and payloads[-1] == "[DONE]"
    return dict(last["aligner"])


def error_then_done(events: list[str]) -> dict[str, Any]:
    """The error a stream ended with: it must be the event just before ``[DONE]``, the last one."""
    payloads = data(events)
    assert events[-1] == DONE and payloads[-1] == "[DONE]"
    return dict(payloads[-2]["error"])


async def test_a_passed_answer_streams_byte_identical() -> None:
    payloads = data(await stream(chat(), request(BREAD)))
    assert text_of(payloads) == BENIGN_ANSWER + " "
    assert annotation(payloads)["status"] == "passed" and finish_of(payloads) == "stop"


async def test_a_corrected_answer_streams_the_correctors_own_tokens() -> None:
    payloads = data(await stream(chat(), request(block=False, return_original=True)))
    pieces = [p for p in payloads if isinstance(p, dict) and p["choices"] and p["choices"][0]["delta"].get("content")]
    assert len(pieces) == len(CORRECTION.split(" "))  # relayed as written, not sent whole
    assert text_of(payloads) == CORRECTION
    aligner = annotation(payloads)
    assert aligner["status"] == "modified" and aligner["original"] == STREAMED_HARM
    assert (aligner["cost_before"], aligner["cost_after"]) == (4.0, -4.0)
    assert payloads[0]["id"] == "chatcmpl-up" and payloads[0]["model"] == "up-model"  # the upstream's id and model


async def test_fail_open_before_the_first_token_streams_the_original_unchecked() -> None:
    serving = chat(generator=FakeCorrectorGenerator(behaviour="raise"))
    payloads = data(await stream(serving, request(block=False)))
    assert text_of(payloads) == STREAMED_HARM
    aligner = annotation(payloads)
    # The failure's kind only: an exception's message can carry internal hosts and URLs.
    assert aligner["status"] == "unchecked" and aligner["choices"][0]["error"] == "RuntimeError"


async def test_fail_open_after_the_first_token_ends_the_stream_with_an_error() -> None:
    serving = chat(generator=FakeCorrectorGenerator(behaviour="raise_midstream"))
    events = await stream(serving, request(block=False, failure_policy="fail_open"))
    sent = text_of(data(events))
    assert sent and CORRECTION.startswith(sent) and sent != CORRECTION  # what went out stays out
    error = error_then_done(events)
    assert error["code"] == "alignment_unavailable" and "mid-stream" in error["message"]
    assert not any(isinstance(p, dict) and "aligner" in p for p in data(events))


@pytest.mark.parametrize(
    ("scorer", "generator", "opened"),
    [
        (FakeScorer("raise"), FakeCorrectorGenerator(), False),  # before any choice is opened
        (FakeScorer(), FakeCorrectorGenerator(behaviour="raise"), True),  # the choice is opened, no text
    ],
    ids=["scorer", "corrector"],
)
async def test_fail_closed_ends_the_stream_with_an_alignment_error(
    scorer: FakeScorer, generator: FakeCorrectorGenerator, opened: bool
) -> None:
    events = await stream(chat(scorer=scorer, generator=generator), request(block=False, failure_policy="fail_closed"))
    assert error_then_done(events)["code"] == "alignment_unavailable"
    assert text_of(data(events)) == ""
    assert any(isinstance(p, dict) and p.get("choices") for p in data(events)) is opened


async def test_an_empty_streamed_correction_never_replaces_the_answer() -> None:
    serving = chat(generator=FakeCorrectorGenerator(behaviour="empty"))
    payloads = data(await stream(serving, request(block=False)))
    assert text_of(payloads) == STREAMED_HARM
    assert annotation(payloads)["status"] == "flagged"  # still unsafe, and the client is told so


async def test_a_blocked_stream_sends_the_block_message_whole_and_filters() -> None:
    generator = FakeCorrectorGenerator()
    serving = chat(scorer=FakeScorer(costs={CORRECTION: 2.0}), generator=generator)  # still unsafe
    payloads = data(await stream(serving, request(block=True)))
    assert text_of(payloads) == DEFAULT_BLOCK_MESSAGE
    assert finish_of(payloads) == "content_filter" and annotation(payloads)["status"] == "blocked"
    assert generator.streams_closed == 0  # generated whole, never streamed
    safe = data(await stream(chat(), request(block=True)))
    assert text_of(safe) == CORRECTION and annotation(safe)["status"] == "modified"


@pytest.mark.parametrize(
    "case",
    ["passed", "corrected", "fail-open-early", "fail-open-mid", "fail-closed", "empty", "blocked", "upstream-dies"],
)
async def test_every_stream_ends_with_done(case: str) -> None:
    serving, req = {
        "passed": (chat(), request(BREAD)),
        "corrected": (chat(), request(block=False)),
        "fail-open-early": (chat(generator=FakeCorrectorGenerator(behaviour="raise")), request(block=False)),
        "fail-open-mid": (chat(generator=FakeCorrectorGenerator(behaviour="raise_midstream")), request(block=False)),
        "fail-closed": (chat(scorer=FakeScorer("raise")), request(failure_policy="fail_closed")),
        "empty": (chat(generator=FakeCorrectorGenerator(behaviour="empty")), request(block=False)),
        "blocked": (chat(scorer=FakeScorer(costs={CORRECTION: 2.0})), request(block=True)),
        "upstream-dies": (chat(upstream=FakeUpstream(fail_after=3)), request()),
    }[case]
    events = await stream(serving, req)
    assert events[-1] == DONE and events.count(DONE) == 1


async def test_an_upstream_failure_mid_stream_is_an_error_chunk() -> None:
    upstream = FakeUpstream(fail_after=3)
    events = await stream(chat(upstream=upstream), request())
    assert error_then_done(events)["code"] == "upstream_unavailable"
    assert upstream.streams_closed == 1


async def test_keepalive_comments_go_out_while_the_upstream_is_buffered() -> None:
    events = await stream(chat(upstream=FakeUpstream(delay_s=0.3), keepalive_interval_s=0.05), request())
    assert events[0] == KEEPALIVE and events[-1] == DONE
    assert text_of(data(events)) == CORRECTION


async def test_mode_off_relays_the_upstreams_own_bytes() -> None:
    events = await stream(chat(), request(mode="off"))
    assert events[0].startswith('data: {"id": "chatcmpl-up"')  # json.dumps spacing: not re-serialised
    assert text_of(data(events)) == STREAMED_HARM and events[-1] == DONE


async def test_tool_calls_are_replayed_and_skipped() -> None:
    payloads = data(await stream(chat(), request("call the weather tool")))
    calls = [c["delta"]["tool_calls"] for p in payloads[:-2] for c in p["choices"] if c["delta"].get("tool_calls")]
    assert calls[0][0]["function"]["name"] == "get_weather"
    assert annotation(payloads)["status"] == "skipped"


async def test_each_of_n_choices_is_streamed_in_turn() -> None:
    req = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": BOMB}], "stream": True, "n": 2}
    )
    payloads = data(await stream(chat(aligner={"block": False}), req))
    assert text_of(payloads, 0) == text_of(payloads, 1) == CORRECTION
    assert [c["status"] for c in annotation(payloads)["choices"]] == ["modified", "modified"]


async def test_closing_the_stream_mid_correction_stops_the_corrector() -> None:
    generator = FakeCorrectorGenerator(word_delay_s=0.05)
    events = chat(generator=generator).create_stream(request(block=False), "req-test")
    async for event in events:
        if '"content":"I' in event:
            break  # the first corrected word: the client hangs up
    await events.aclose()
    assert generator.streams_closed == 1


def test_an_unknown_model_fails_before_the_stream_starts() -> None:
    with pytest.raises(UnknownModelError):
        chat().create_stream(ChatCompletionRequest(model="nope", messages=[{"role": "user", "content": "x"}]), "r")  # type: ignore[list-item]


async def test_a_whole_answer_is_corrected_annotated_and_its_status_is_a_header() -> None:
    upstream = FakeUpstream()
    response = await chat(upstream=upstream).create(request(stream=False, return_original=True), "req-test")
    assert response.choices[0].message.content == CORRECTION
    assert response.aligner is not None and response.aligner.original == HARMFUL_ANSWER
    assert aligner_headers(response.aligner) == {"x-aligner-status": "modified"}
    assert upstream.bodies[-1]["model"] == "up-model" and "aligner" not in upstream.bodies[-1]


async def test_a_whole_blocked_answer_finishes_with_content_filter() -> None:
    serving = chat(scorer=FakeScorer(costs={CORRECTION: 2.0}))
    response = await serving.create(request(stream=False), "req-test")
    assert response.choices[0].message.content == DEFAULT_BLOCK_MESSAGE
    assert response.choices[0].finish_reason == "content_filter"
    assert response.aligner is not None and response.aligner.status == "blocked"
