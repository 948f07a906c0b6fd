"""``/v1/chat/completions``: the upstream's chat answer, aligned, whole or streamed.

The corrector sees the whole conversation; the scorer sees the last user
turn, which is what the answer answers. A choice with tool calls or no text
has nothing to align and is returned as the upstream sent it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.server.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
)
from aligner_proxy.server.serving.base import ChoiceQuestion
from aligner_proxy.server.serving.sse import ChoiceDelta, ChunkFormat
from aligner_proxy.server.serving.stream import StreamingServing


def chat_question(request: ChatCompletionRequest) -> ChoiceQuestion:
    """The conversation for the corrector and the last user turn for the scorer."""
    messages: list[ChatMessage] = [m.to_core() for m in request.messages]
    users = [m.content for m in messages if m.role == "user"]
    return ChoiceQuestion(messages, users[-1] if users else messages[-1].content)


class ChatChunkFormat(ChunkFormat[ChatCompletionChunk]):
    """Chat chunks: a choice opens with the assistant role, then content deltas."""

    chunk_type = ChatCompletionChunk
    empty_id = "chatcmpl-empty"

    def read(self, chunk: ChatCompletionChunk) -> list[ChoiceDelta]:
        return [ChoiceDelta(c.index, c.delta.content, c.finish_reason, bool(c.delta.tool_calls)) for c in chunk.choices]

    def choice(self, index: int, *, role: bool, text: str | None, finish: str | None) -> Any:
        delta = ChunkDelta(role="assistant", content="") if role else ChunkDelta(content=text)
        return ChunkChoice(index=index, delta=delta, finish_reason=finish)


class ChatServing(StreamingServing[ChatCompletionChunk]):
    """Chat completions through the alignment policy."""

    endpoint = "/v1/chat/completions"
    chunk_format = ChatChunkFormat()

    async def create(
        self, request: ChatCompletionRequest, request_id: str, *, may_relax: bool = True
    ) -> ChatCompletionResponse:
        """The upstream's answer with each choice's text aligned and the ``aligner`` annotation."""
        routed = self.route(request.model, request.aligner, request_id, may_relax=may_relax)
        response = await routed.route.upstream.chat(request, routed.route.upstream_model)
        asked = chat_question(request)
        response.aligner = await self.align_response(routed, response, lambda _index: asked)
        return response

    def create_stream(
        self, request: ChatCompletionRequest, request_id: str, *, may_relax: bool = True
    ) -> AsyncGenerator[str, None]:
        """The SSE events of the answer (see :class:`StreamingServing`); an unknown model raises here."""
        routed = self.route(request.model, request.aligner, request_id, may_relax=may_relax)
        route = routed.route
        asked = chat_question(request)
        return self.stream(
            routed, lambda: route.upstream.chat_stream(request, route.upstream_model), lambda _index: asked
        )
