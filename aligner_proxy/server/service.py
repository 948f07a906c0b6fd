"""The service layer: one upstream call, the alignment policy, and the annotated answer.

Routes translate HTTP and call :class:`ProxyService`; everything here speaks
pydantic models and the core's types. Streams are produced as ready SSE
strings so the route only wraps them in a ``StreamingResponse``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Generic

from aligner_proxy.core.annotation import (
    AlignerAnnotation,
    AlignerOptions,
    ChoiceAnnotation,
    CorrectedItem,
    CorrectResponse,
    Timings,
    TokenUsage,
)
from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.policy import AlignmentPipeline, Outcome, PolicyConfig
from aligner_proxy.server.errors import AlignerProxyError, UnknownModelError, from_core
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    CorrectRequest,
    ErrorBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    ScoreRequest,
    ScoreResponse,
    Usage,
)
from aligner_proxy.server.upstream import ChunkT, StreamEvent, Upstream

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
KEEPALIVE = ": keep-alive\n\n"


@dataclass
class Route:
    """A served model name: its upstream, the name the upstream knows it by, and its policy."""

    name: str
    upstream: Upstream
    upstream_model: str
    policy: PolicyConfig


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


def error_event(exc: AlignerProxyError) -> str:
    body = ErrorResponse(error=ErrorBody(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code))
    return sse(body.model_dump_json())


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def chat_question(request: ChatCompletionRequest) -> tuple[list[ChatMessage], str]:
    """The conversation for the corrector and the last user turn for the scorer."""
    messages = [m.to_core() for m in request.messages]
    users = [m.content for m in messages if m.role == "user"]
    return messages, users[-1] if users else messages[-1].content


class ProxyService:
    def __init__(
        self,
        routes: list[Route],
        pipeline: AlignmentPipeline,
        metrics: Metrics,
        *,
        keepalive_s: float = 5.0,
    ) -> None:
        self.routes = {route.name: route for route in routes}
        self.pipeline = pipeline
        self.metrics = metrics
        self.keepalive_s = keepalive_s

    # ----------------------------------------------------------- plumbing

    def resolve(self, model: str) -> Route:
        try:
            return self.routes[model]
        except KeyError:
            known = ", ".join(sorted(self.routes))
            raise UnknownModelError(
                f"The model '{model}' does not exist on this proxy; available: {known}", param="model"
            ) from None

    def policy(self, route: Route, options: AlignerOptions | None) -> PolicyConfig:
        """The route's policy with the request's overrides, its threshold resolved (the scorer's by default)."""
        if options is None:
            return self.pipeline.resolve(route.policy)
        return self.pipeline.resolve(
            route.policy.with_overrides(
                mode=options.mode,
                threshold=options.threshold,
                block=options.block,
                failure_policy=options.failure_policy,
            )
        )

    def model_list(self) -> ModelList:
        return ModelList(data=[ModelCard(id=name) for name in self.routes])

    def _annotate(
        self,
        route: Route,
        config: PolicyConfig,
        outcomes: dict[int, Outcome],
        n_choices: int,
        *,
        upstream_ms: float,
        start: float,
        return_original: bool,
    ) -> AlignerAnnotation:
        choices = []
        for index in range(n_choices):
            outcome = outcomes.get(index)
            if outcome is None:  # a tool call or an empty answer: nothing to align
                choices.append(ChoiceAnnotation(index=index, status="skipped"))
                continue
            choices.append(
                ChoiceAnnotation(
                    index=index,
                    status=outcome.status,
                    cost_before=outcome.cost_before,
                    cost_after=outcome.cost_after,
                    original=outcome.original if return_original else None,
                    error=outcome.error,
                )
            )
            self.metrics.statuses.labels(model=route.name, status=outcome.status).inc()
        done = list(outcomes.values())
        scorer_ms = max((o.scorer_ms for o in done), default=0.0)
        corrector_ms = max((o.corrector_ms for o in done), default=0.0)
        prompt_tokens = sum(o.corrector_prompt_tokens for o in done)
        completion_tokens = sum(o.corrector_completion_tokens for o in done)
        total_ms = _ms(start)
        for stage, ms in (
            ("upstream", upstream_ms),
            ("scorer", scorer_ms),
            ("corrector", corrector_ms),
            ("total", total_ms),
        ):
            if ms:
                self.metrics.observe_ms(stage, ms)
        self.metrics.count_tokens("corrector", prompt_tokens, completion_tokens)
        first = choices[0] if choices else ChoiceAnnotation(index=0, status="skipped")
        return AlignerAnnotation(
            status=first.status,
            mode=config.mode,
            threshold=config.threshold,
            cost_before=first.cost_before,
            cost_after=first.cost_after,
            original=first.original,
            scorer=self.pipeline.scorer.model_id if config.mode != "off" else None,
            corrector=self.pipeline.corrector.model_id if config.mode != "off" else None,
            timings=Timings(upstream_ms=upstream_ms, scorer_ms=scorer_ms, corrector_ms=corrector_ms, total_ms=total_ms),
            corrector_usage=TokenUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            choices=choices,
        )

    def _settle(
        self,
        route: Route,
        config: PolicyConfig,
        options: AlignerOptions | None,
        aligned: list[tuple[ChatChoice | CompletionChoice, Outcome]],
        n_choices: int,
        *,
        upstream_ms: float,
        start: float,
    ) -> AlignerAnnotation:
        """Mark blocked choices as filtered and annotate the response (texts are already set)."""
        for choice, outcome in aligned:
            if outcome.status == "blocked":
                choice.finish_reason = "content_filter"
        return self._annotate(
            route,
            config,
            {choice.index: outcome for choice, outcome in aligned},
            n_choices,
            upstream_ms=upstream_ms,
            start=start,
            return_original=(options or AlignerOptions()).return_original,
        )

    def _count_upstream_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.metrics.count_tokens("upstream", usage.prompt_tokens, usage.completion_tokens)

    # --------------------------------------------------------- non-stream

    async def chat(self, request: ChatCompletionRequest, request_id: str) -> ChatCompletionResponse:
        route = self.resolve(request.model)
        config = self.policy(route, request.aligner)
        start = time.perf_counter()
        response = await route.upstream.chat(request, route.upstream_model)
        upstream_ms = _ms(start)
        self._count_upstream_usage(response.usage)
        messages, last_user = chat_question(request)
        alignable = [c for c in response.choices if c.message.content and not c.message.tool_calls]
        outcomes = await self.pipeline.align(
            [CorrectionInput(question=messages, answer=c.message.content or "") for c in alignable],
            config,
            score_prompts=[last_user] * len(alignable),
            request_id=request_id,
        )
        for choice, outcome in zip(alignable, outcomes, strict=True):
            choice.message.content = outcome.text
        response.aligner = self._settle(
            route,
            config,
            request.aligner,
            list(zip(alignable, outcomes, strict=True)),
            len(response.choices),
            upstream_ms=upstream_ms,
            start=start,
        )
        return response

    async def completion(self, request: CompletionRequest, request_id: str) -> CompletionResponse:
        route = self.resolve(request.model)
        config = self.policy(route, request.aligner)
        start = time.perf_counter()
        response = await route.upstream.completion(request, route.upstream_model)
        upstream_ms = _ms(start)
        self._count_upstream_usage(response.usage)
        prompts = request.prompts()
        # OpenAI orders choices prompt-major: choice i answers prompt i // n.
        questions = [prompts[min(c.index // request.n, len(prompts) - 1)] for c in response.choices]
        alignable = [(c, q) for c, q in zip(response.choices, questions, strict=True) if c.text]
        outcomes = await self.pipeline.align(
            [CorrectionInput(question=q, answer=c.text) for c, q in alignable], config, request_id=request_id
        )
        for (choice, _), outcome in zip(alignable, outcomes, strict=True):
            choice.text = outcome.text
        response.aligner = self._settle(
            route,
            config,
            request.aligner,
            [(c, o) for (c, _), o in zip(alignable, outcomes, strict=True)],
            len(response.choices),
            upstream_ms=upstream_ms,
            start=start,
        )
        return response

    # ------------------------------------------------------------- stream

    def chat_stream(self, request: ChatCompletionRequest, request_id: str) -> AsyncGenerator[str, None]:
        route = self.resolve(request.model)
        config = self.policy(route, request.aligner)
        messages, last_user = chat_question(request)
        return self._stream(
            _StreamJob(
                _ChatShape(),
                route,
                config,
                lambda: route.upstream.chat_stream(request, route.upstream_model),
                question=lambda _index: messages,
                score_prompt=lambda _index: last_user,
                return_original=(request.aligner or AlignerOptions()).return_original,
                request_id=request_id,
            )
        )

    def completion_stream(self, request: CompletionRequest, request_id: str) -> AsyncGenerator[str, None]:
        route = self.resolve(request.model)
        config = self.policy(route, request.aligner)
        prompts = request.prompts()

        def prompt_of(index: int) -> str:
            return prompts[min(index // request.n, len(prompts) - 1)]

        return self._stream(
            _StreamJob(
                _CompletionShape(),
                route,
                config,
                lambda: route.upstream.completion_stream(request, route.upstream_model),
                question=prompt_of,
                score_prompt=prompt_of,
                return_original=(request.aligner or AlignerOptions()).return_original,
                request_id=request_id,
            )
        )

    async def _stream(self, job: _StreamJob[ChunkT]) -> AsyncGenerator[str, None]:
        """The SSE stream of an answer. Mode ``off`` passes the upstream's chunks through as
        sent; otherwise the upstream stream is buffered (with keep-alive comments), each
        choice is assessed, and its text is streamed: the original when it passes, the
        corrector's own token stream when it is corrected. ``block`` needs the whole
        correction before anything is sent, so it is generated first, then sent.
        Every stream ends with ``data: [DONE]``, also after an error chunk."""
        try:
            async with aclosing(self._stream_events(job)) as events:
                async for event in events:
                    yield event
        except (AlignerProxyError, AlignmentError) as exc:
            error = from_core(exc)
            assert error is not None
            logger.warning("request %s: stream ended with %s: %s", job.request_id, type(exc).__name__, error.message)
            yield error_event(error)
        except Exception as exc:  # the status line is long gone: report in-band, never drop [DONE]
            logger.exception("request %s: stream failed", job.request_id)
            yield error_event(AlignerProxyError(f"Internal error (request id {job.request_id}): {type(exc).__name__}"))
        # Not in a `finally`: a client that disconnects closes this generator, and a closed
        # generator must not yield again.
        yield DONE

    async def _stream_events(self, job: _StreamJob[ChunkT]) -> AsyncGenerator[str, None]:
        """The events of :meth:`_stream` before ``[DONE]``; errors propagate to it."""
        shape, route, config, request_id = job.shape, job.route, job.config, job.request_id
        question, score_prompt, open_stream = job.question, job.score_prompt, job.open_stream
        start = time.perf_counter()
        if config.mode == "off":
            async with aclosing(open_stream()) as passthrough:
                async for event in passthrough:
                    yield sse(event.raw)
            return

        buffer = _Buffer[ChunkT]()
        pump = asyncio.create_task(buffer.fill(open_stream(), shape))
        try:
            while not pump.done():
                done, _ = await asyncio.wait({pump}, timeout=self.keepalive_s)
                if not done:
                    yield KEEPALIVE
            pump.result()
        finally:
            pump.cancel()
        upstream_ms = _ms(start)
        self._count_upstream_usage(buffer.usage)

        if buffer.has_tool_calls or not buffer.texts:
            for event in buffer.events:  # nothing to align: replay as received
                yield sse(event.raw)
            annotation = self._annotate(
                route,
                config,
                {},
                max(len(buffer.texts), 1),
                upstream_ms=upstream_ms,
                start=start,
                return_original=False,
            )
            yield sse(shape.annotation_chunk(buffer, annotation))
            return

        indices = sorted(buffer.texts)
        items = [CorrectionInput(question=question(i), answer=buffer.text(i)) for i in indices]
        prompts = [score_prompt(i) for i in indices]
        outcomes = await self.pipeline.assess(items, prompts, config, request_id=request_id)
        final: dict[int, Outcome] = {}
        for index, item, prompt, outcome in zip(indices, items, prompts, outcomes, strict=True):
            yield sse(shape.chunk(buffer, index, role=True))
            correction = self.pipeline.stream_correction(item, prompt, outcome, config, request_id=request_id)
            async with aclosing(correction):
                async for piece in correction:
                    yield sse(shape.chunk(buffer, index, text=piece))
            final[index] = correction.outcome
            finish = "content_filter" if correction.outcome.status == "blocked" else buffer.finish.get(index, "stop")
            yield sse(shape.chunk(buffer, index, finish=finish))
        annotation = self._annotate(
            route,
            config,
            final,
            max(indices) + 1,
            upstream_ms=upstream_ms,
            start=start,
            return_original=job.return_original,
        )
        yield sse(shape.annotation_chunk(buffer, annotation))

    # ------------------------------------------------------- core over HTTP

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        scores = await self.pipeline.scorer.score(request.prompts, request.completions)
        return ScoreResponse(scorer=self.pipeline.scorer.model_id, scores=scores)

    async def correct(self, request: CorrectRequest) -> CorrectResponse:
        items = [
            CorrectionInput(
                question=item.question if isinstance(item.question, str) else [m.to_core() for m in item.question],
                answer=item.answer,
            )
            for item in request.items
        ]
        # Items in, verdicts out: a text still above the threshold is reported ``flagged``
        # with its correction (never swapped for the block message), and a failure is an error.
        config = PolicyConfig(mode=request.mode, threshold=request.threshold, block=False, failure_policy="fail_closed")
        outcomes = await self.pipeline.align(items, config)
        prompt_tokens = sum(o.corrector_prompt_tokens for o in outcomes)
        completion_tokens = sum(o.corrector_completion_tokens for o in outcomes)
        return CorrectResponse(
            corrector=self.pipeline.corrector.model_id,
            scorer=self.pipeline.scorer.model_id,
            items=[
                CorrectedItem(correction=o.text, status=o.status, cost_before=o.cost_before, cost_after=o.cost_after)
                for o in outcomes
            ],
            corrector_usage=TokenUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )


# ------------------------------------------------------------ stream shapes


@dataclass
class _StreamJob(Generic[ChunkT]):
    """One stream to produce: how to read/write its chunks, where it goes, and its policy."""

    shape: _Shape[ChunkT]
    route: Route
    config: PolicyConfig
    open_stream: Callable[[], AsyncGenerator[StreamEvent[ChunkT], None]]
    question: Callable[[int], str | list[ChatMessage]]
    score_prompt: Callable[[int], str]
    return_original: bool
    request_id: str


@dataclass
class _Buffer(Generic[ChunkT]):
    """An upstream stream collected in full: raw events, text and finish reason per choice."""

    events: list[StreamEvent[ChunkT]] = field(default_factory=list)
    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    has_tool_calls: bool = False
    usage: Usage | None = None
    first: ChunkT | None = None

    async def fill(self, stream: AsyncGenerator[StreamEvent[ChunkT], None], shape: _Shape[ChunkT]) -> None:
        async with aclosing(stream) as events:  # closes the upstream response if we are cancelled
            await self._fill(events, shape)

    async def _fill(self, stream: AsyncGenerator[StreamEvent[ChunkT], None], shape: _Shape[ChunkT]) -> None:
        async for event in stream:
            self.events.append(event)
            if self.first is None:
                self.first = event.chunk
            if event.chunk.usage is not None:
                self.usage = event.chunk.usage
            for index, text, finish, tool in shape.read(event.chunk):
                self.texts.setdefault(index, [])
                if text:
                    self.texts[index].append(text)
                if finish:
                    self.finish[index] = finish
                self.has_tool_calls |= tool

    def text(self, index: int) -> str:
        return "".join(self.texts.get(index, []))


class _Shape(Generic[ChunkT]):
    """How to read and write the chunks of one endpoint's stream."""

    def read(self, chunk: ChunkT) -> list[tuple[int, str | None, str | None, bool]]:
        raise NotImplementedError

    def chunk(
        self,
        buffer: _Buffer[ChunkT],
        index: int,
        *,
        role: bool = False,
        text: str | None = None,
        finish: str | None = None,
    ) -> str:
        raise NotImplementedError

    def annotation_chunk(self, buffer: _Buffer[ChunkT], annotation: AlignerAnnotation) -> str:
        raise NotImplementedError


class _ChatShape(_Shape[ChatCompletionChunk]):
    def read(self, chunk: ChatCompletionChunk) -> list[tuple[int, str | None, str | None, bool]]:
        return [(c.index, c.delta.content, c.finish_reason, bool(c.delta.tool_calls)) for c in chunk.choices]

    @staticmethod
    def _base(buffer: _Buffer[ChatCompletionChunk]) -> dict[str, object]:
        first = buffer.first
        assert first is not None  # a stream with text has a first chunk
        return {"id": first.id, "created": first.created, "model": first.model}

    def chunk(
        self,
        buffer: _Buffer[ChatCompletionChunk],
        index: int,
        *,
        role: bool = False,
        text: str | None = None,
        finish: str | None = None,
    ) -> str:
        delta = ChunkDelta(role="assistant", content="") if role else ChunkDelta(content=text)
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(**self._base(buffer), choices=[choice]).model_dump_json(exclude_none=True)  # type: ignore[arg-type]

    def annotation_chunk(self, buffer: _Buffer[ChatCompletionChunk], annotation: AlignerAnnotation) -> str:
        base = self._base(buffer) if buffer.first else {"id": "chatcmpl-empty", "model": "unknown"}
        chunk = ChatCompletionChunk(**base, choices=[], usage=buffer.usage, aligner=annotation)  # type: ignore[arg-type]
        return chunk.model_dump_json(exclude_none=True)


class _CompletionShape(_Shape[CompletionChunk]):
    def read(self, chunk: CompletionChunk) -> list[tuple[int, str | None, str | None, bool]]:
        return [(c.index, c.text, c.finish_reason, False) for c in chunk.choices]

    @staticmethod
    def _base(buffer: _Buffer[CompletionChunk]) -> dict[str, object]:
        first = buffer.first
        assert first is not None
        return {"id": first.id, "created": first.created, "model": first.model}

    def chunk(
        self,
        buffer: _Buffer[CompletionChunk],
        index: int,
        *,
        role: bool = False,
        text: str | None = None,
        finish: str | None = None,
    ) -> str:
        if role and text is None and finish is None:
            text = ""
        choice = CompletionChoice(index=index, text=text or "", finish_reason=finish)
        return CompletionChunk(**self._base(buffer), choices=[choice]).model_dump_json(exclude_none=True)  # type: ignore[arg-type]

    def annotation_chunk(self, buffer: _Buffer[CompletionChunk], annotation: AlignerAnnotation) -> str:
        base = self._base(buffer) if buffer.first else {"id": "cmpl-empty", "model": "unknown"}
        chunk = CompletionChunk(**base, choices=[], usage=buffer.usage, aligner=annotation)  # type: ignore[arg-type]
        return chunk.model_dump_json(exclude_none=True)
