"""Server-sent events: chunk encoding, the upstream stream buffered behind keep-alive comments, ``[DONE]``.

OpenAI's streams are ``data: <json>`` events ending with ``data: [DONE]``. A
proxy that aligns an answer must hold the upstream's stream until it is
complete, so it sends SSE comments (``: keep-alive``) meanwhile to keep
clients and load balancers from timing out. Errors after the status line
went out can only be reported in-band, as an error chunk, and ``[DONE]``
still follows it (:func:`ending_with_done`), as vLLM's server does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Generic

from aligner_proxy.core.annotation import AlignerAnnotation
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.server.errors import AlignerProxyError, from_core
from aligner_proxy.server.protocol import ErrorBody, ErrorResponse, Usage
from aligner_proxy.server.upstream import ChunkT, StreamEvent

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
KEEPALIVE = ": keep-alive\n\n"


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


def error_event(exc: AlignerProxyError) -> str:
    body = ErrorResponse(error=ErrorBody(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code))
    return sse(body.model_dump_json())


async def ending_with_done(events: AsyncGenerator[str, None], request_id: str) -> AsyncGenerator[str, None]:
    """``events``, then ``data: [DONE]``: always, also after an error, which becomes an error chunk."""
    try:
        async with aclosing(events):
            async for event in events:
                yield event
    except (AlignerProxyError, AlignmentError) as exc:
        error = from_core(exc)
        assert error is not None
        logger.warning("request %s: stream ended with %s: %s", request_id, type(exc).__name__, error.message)
        yield error_event(error)
    except Exception as exc:  # the status line is long gone: report in-band, never drop [DONE]
        logger.exception("request %s: stream failed", request_id)
        yield error_event(AlignerProxyError(f"Internal error (request id {request_id}): {type(exc).__name__}"))
    # Not in a `finally`: a client that disconnects closes this generator, and a closed
    # generator must not yield again.
    yield DONE


async def keepalive_until(work: Coroutine[Any, Any, None], interval_s: float) -> AsyncGenerator[str, None]:
    """Run ``work``, yielding a keep-alive comment every ``interval_s`` until it is done; its error
    is raised here. Closing this generator cancels ``work``."""
    task = asyncio.create_task(work)
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=interval_s)
            if not done:
                yield KEEPALIVE
        task.result()
    finally:
        task.cancel()


@dataclass(frozen=True)
class ChoiceDelta:
    """What one chunk says of one choice."""

    index: int
    text: str | None
    finish_reason: str | None
    has_tool_calls: bool


class ChunkFormat(Generic[ChunkT]):
    """How one endpoint's stream chunks are read and written (chat deltas, completion texts)."""

    chunk_type: type[ChunkT]
    empty_id: str  # the annotation chunk's id when the upstream sent no chunk at all

    def read(self, chunk: ChunkT) -> list[ChoiceDelta]:
        raise NotImplementedError

    def choice(self, index: int, *, role: bool, text: str | None, finish: str | None) -> Any:
        """Choice ``index`` as this endpoint's chunks carry it: its opening (``role``), a text piece,
        or its finish reason."""
        raise NotImplementedError

    def choice_chunk(
        self,
        buffer: UpstreamBuffer[ChunkT],
        index: int,
        *,
        role: bool = False,
        text: str | None = None,
        finish: str | None = None,
    ) -> str:
        """A chunk of one choice (see :meth:`choice`) under the upstream's id and model."""
        first = buffer.first
        assert first is not None  # a stream with text has a first chunk
        choice = self.choice(index, role=role, text=text, finish=finish)
        chunk = self.chunk_type(id=first.id, created=first.created, model=first.model, choices=[choice])
        return chunk.model_dump_json(exclude_none=True)

    def annotation_chunk(self, buffer: UpstreamBuffer[ChunkT], annotation: AlignerAnnotation) -> str:
        """The stream's last chunk before ``[DONE]``: no choices, the upstream's usage, the annotation."""
        first = buffer.first
        if first is None:
            chunk = self.chunk_type(id=self.empty_id, model="unknown", usage=buffer.usage, aligner=annotation)
        else:
            chunk = self.chunk_type(
                id=first.id, created=first.created, model=first.model, usage=buffer.usage, aligner=annotation
            )
        return chunk.model_dump_json(exclude_none=True)


@dataclass
class UpstreamBuffer(Generic[ChunkT]):
    """An upstream stream collected in full: raw events, text and finish reason per choice."""

    events: list[StreamEvent[ChunkT]] = field(default_factory=list)
    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    has_tool_calls: bool = False
    usage: Usage | None = None
    first: ChunkT | None = None

    async def fill(self, stream: AsyncGenerator[StreamEvent[ChunkT], None], chunks: ChunkFormat[ChunkT]) -> None:
        async with aclosing(stream) as events:  # closes the upstream response if we are cancelled
            async for event in events:
                self._add(event, chunks)

    def _add(self, event: StreamEvent[ChunkT], chunks: ChunkFormat[ChunkT]) -> None:
        self.events.append(event)
        if self.first is None:
            self.first = event.chunk
        if event.chunk.usage is not None:
            self.usage = event.chunk.usage
        for delta in chunks.read(event.chunk):
            self.texts.setdefault(delta.index, [])
            if delta.text:
                self.texts[delta.index].append(delta.text)
            if delta.finish_reason:
                self.finish[delta.index] = delta.finish_reason
            self.has_tool_calls |= delta.has_tool_calls

    def text(self, index: int) -> str:
        return "".join(self.texts.get(index, []))
