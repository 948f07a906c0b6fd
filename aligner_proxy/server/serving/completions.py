"""``/v1/completions``: the upstream's text completions, aligned, whole or streamed.

The corrector and the scorer both see the prompt a choice answers. OpenAI
orders choices prompt-major, so choice ``i`` answers prompt ``i // n``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial
from typing import Any

from aligner_proxy.server.protocol import CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse
from aligner_proxy.server.serving.base import ChoiceQuestion
from aligner_proxy.server.serving.sse import ChoiceDelta, ChunkFormat
from aligner_proxy.server.serving.stream import StreamingServing


def completion_question(request: CompletionRequest, index: int) -> ChoiceQuestion:
    """The prompt choice ``index`` answers, for the corrector and the scorer alike."""
    prompts = request.prompts()
    prompt = prompts[min(index // request.n, len(prompts) - 1)]
    return ChoiceQuestion(prompt, prompt)


class CompletionChunkFormat(ChunkFormat[CompletionChunk]):
    """Completion chunks: a choice's text pieces, an empty one to open it."""

    chunk_type = CompletionChunk
    empty_id = "cmpl-empty"

    def read(self, chunk: CompletionChunk) -> list[ChoiceDelta]:
        return [ChoiceDelta(c.index, c.text, c.finish_reason, False) for c in chunk.choices]

    def choice(self, index: int, *, role: bool, text: str | None, finish: str | None) -> Any:
        return CompletionChoice(index=index, text=text or "", finish_reason=finish)


class CompletionServing(StreamingServing[CompletionChunk]):
    """Text completions through the alignment policy."""

    endpoint = "/v1/completions"
    chunk_format = CompletionChunkFormat()

    async def create(
        self, request: CompletionRequest, request_id: str, *, may_relax: bool = True
    ) -> CompletionResponse:
        """The upstream's answer with each choice's text aligned and the ``aligner`` annotation."""
        routed = self.route(request.model, request.aligner, request_id, may_relax=may_relax)
        response = await routed.route.upstream.completion(request, routed.route.upstream_model)
        response.aligner = await self.align_response(routed, response, partial(completion_question, request))
        return response

    def create_stream(
        self, request: CompletionRequest, request_id: str, *, may_relax: bool = True
    ) -> AsyncGenerator[str, None]:
        """The SSE events of the answer (see :class:`StreamingServing`); an unknown model raises here."""
        routed = self.route(request.model, request.aligner, request_id, may_relax=may_relax)
        route = routed.route
        return self.stream(
            routed,
            lambda: route.upstream.completion_stream(request, route.upstream_model),
            partial(completion_question, request),
        )
