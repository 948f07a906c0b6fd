"""SSE plumbing: ``[DONE]`` after every ending, errors in-band, keep-alive comments while waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.server.errors import UpstreamTimeoutError
from aligner_proxy.server.serving.sse import DONE, KEEPALIVE, ending_with_done, keepalive_until, sse
from tests.proxy.helpers import collect, data


async def events_then(exc: Exception | None) -> AsyncGenerator[str, None]:
    yield sse('{"n": 1}')
    if exc is not None:
        raise exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (None, None),
        (AlignmentError("the corrector failed mid-stream"), "alignment_unavailable"),
        (UpstreamTimeoutError("the upstream timed out"), "upstream_timeout"),
        (RuntimeError("secret detail"), None),
    ],
    ids=["clean", "alignment", "upstream", "bug"],
)
async def test_done_is_always_last_also_after_an_error_chunk(exc: Exception | None, code: str | None) -> None:
    events = await collect(ending_with_done(events_then(exc), "req-1"))
    assert events[0] == sse('{"n": 1}') and events[-1] == DONE and events.count(DONE) == 1
    if exc is None:
        assert len(events) == 2
        return
    error = data(events)[-2]["error"]
    assert error["code"] == code
    if isinstance(exc, RuntimeError):  # a bug: named by request id, no detail leaked
        assert "req-1" in error["message"] and "secret" not in error["message"]


async def test_keepalive_comments_until_the_work_is_done_and_its_error_is_raised() -> None:
    async def slow(fail: bool) -> None:
        await asyncio.sleep(0.25)
        if fail:
            raise RuntimeError("upstream broke")

    comments = await collect(keepalive_until(slow(False), 0.05))
    assert comments and set(comments) == {KEEPALIVE}
    with pytest.raises(RuntimeError, match="upstream broke"):
        await collect(keepalive_until(slow(True), 0.05))


async def test_closing_the_keepalive_stream_cancels_the_work() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = keepalive_until(forever(), 0.01)
    assert await anext(waiting) == KEEPALIVE
    await waiting.aclose()
    await asyncio.wait_for(cancelled.wait(), 1)
