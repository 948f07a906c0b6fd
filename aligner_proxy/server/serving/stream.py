"""The aligned stream of a generating endpoint (chat or completions), encoded as SSE.

The alignment is the core's: :meth:`~aligner_proxy.core.policy.AlignmentPipeline.assess`
scores the buffered answers, and each choice's text comes from its
:class:`~aligner_proxy.core.policy.CorrectionStream` — the original as is, a
whole correction, or the corrector's own tokens as they are written. What is
left here is when what goes out: keep-alive comments while the upstream's
stream is buffered, each choice opened, its pieces, its finish reason
(``content_filter`` when blocked), the annotation chunk, and ``[DONE]``.
With mode ``off`` the upstream's chunks are relayed byte for byte.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Generic

from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.policy import AlignmentPipeline, Outcome
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.serving.base import ChoiceQuestion, RoutedRequest, ServedModels, Serving
from aligner_proxy.server.serving.sse import ChunkFormat, UpstreamBuffer, ending_with_done, keepalive_until, sse
from aligner_proxy.server.upstream import ChunkT, StreamEvent

UpstreamStream = Callable[[], AsyncGenerator[StreamEvent[ChunkT], None]]


class StreamingServing(Serving, Generic[ChunkT]):
    """:class:`Serving` with streamed answers; chat and completions each bring their chunk format."""

    chunk_format: ChunkFormat[ChunkT]

    def __init__(
        self, models: ServedModels, pipeline: AlignmentPipeline, metrics: Metrics, *, keepalive_s: float = 5.0
    ) -> None:
        super().__init__(models, pipeline, metrics)
        self.keepalive_s = keepalive_s

    def stream(
        self, routed: RoutedRequest, upstream: UpstreamStream[ChunkT], asked: Callable[[int], ChoiceQuestion]
    ) -> AsyncGenerator[str, None]:
        """The SSE events of one streamed answer: ``upstream`` opens the upstream's stream, ``asked``
        says what choice ``index`` answers. Always ends with ``data: [DONE]``."""
        return ending_with_done(self._events(routed, upstream, asked), routed.request_id)

    async def _events(
        self, routed: RoutedRequest, upstream: UpstreamStream[ChunkT], asked: Callable[[int], ChoiceQuestion]
    ) -> AsyncGenerator[str, None]:
        if routed.config.mode == "off":
            async with aclosing(upstream()) as passthrough:
                async for event in passthrough:
                    yield sse(event.raw)
            return
        buffer = UpstreamBuffer[ChunkT]()
        async with aclosing(keepalive_until(buffer.fill(upstream(), self.chunk_format), self.keepalive_s)) as waiting:
            async for comment in waiting:
                yield comment
        upstream_ms = self.upstream_answered(routed, buffer.usage)
        if buffer.has_tool_calls or not buffer.texts:
            for event in buffer.events:  # nothing to align: replay as received
                yield sse(event.raw)
            annotation = self.annotator.annotate(
                routed, {}, max(len(buffer.texts), 1), upstream_ms=upstream_ms, questions={}
            )
            yield sse(self.chunk_format.annotation_chunk(buffer, annotation))
            return
        async with aclosing(self._aligned_choices(routed, buffer, asked, upstream_ms)) as aligned:
            async for chunk in aligned:
                yield chunk

    async def _aligned_choices(
        self,
        routed: RoutedRequest,
        buffer: UpstreamBuffer[ChunkT],
        asked: Callable[[int], ChoiceQuestion],
        upstream_ms: float,
    ) -> AsyncGenerator[str, None]:
        """Each buffered choice in turn, its text as the pipeline streams it, then the annotation."""
        chunks, config, request_id = self.chunk_format, routed.config, routed.request_id
        indices = sorted(buffer.texts)
        questions = {index: asked(index) for index in indices}
        items = [CorrectionInput(question=questions[i].question, answer=buffer.text(i)) for i in indices]
        prompts = [questions[i].score_prompt for i in indices]
        outcomes = await self.pipeline.assess(items, prompts, config, request_id=request_id)
        final: dict[int, Outcome] = {}
        for index, item, prompt, outcome in zip(indices, items, prompts, outcomes, strict=True):
            yield sse(chunks.choice_chunk(buffer, index, role=True))
            correction = self.pipeline.stream_correction(item, prompt, outcome, config, request_id=request_id)
            async with aclosing(correction):
                async for piece in correction:
                    yield sse(chunks.choice_chunk(buffer, index, text=piece))
            final[index] = correction.outcome
            blocked = correction.outcome.status == "blocked"
            finish = "content_filter" if blocked else buffer.finish.get(index, "stop")
            yield sse(chunks.choice_chunk(buffer, index, finish=finish))
        asked_by = {index: question.score_prompt for index, question in questions.items()}
        annotation = self.annotator.annotate(
            routed, final, max(indices) + 1, upstream_ms=upstream_ms, questions=asked_by
        )
        yield sse(chunks.annotation_chunk(buffer, annotation))
