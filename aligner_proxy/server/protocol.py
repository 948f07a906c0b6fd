"""Wire formats: pydantic models of the OpenAI API subset the proxy speaks, plus its own.

Request models accept unknown fields (``extra="allow"``) so that whatever a
client sends — ``logprobs``, ``seed``, ``response_format``, vendor extensions —
is forwarded to the upstream untouched. Response models are equally
permissive: an upstream's answer is parsed, its texts are replaced, and it is
re-emitted with every field it had. The proxy's own additions are the
``aligner`` request option and the ``aligner`` response annotation.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aligner_proxy.core.annotation import (
    AlignerAnnotation,
    AlignerOptions,
)
from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.vocabulary import Mode


class RoundTripModel(BaseModel):
    """A wire model that keeps the fields it does not declare, so they round-trip to the upstream or client."""

    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------------ chat


class ChatMessageIn(RoundTripModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are dropped for alignment only."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")

    def to_core(self) -> ChatMessage:
        """The message as the core sees it: a role and its text."""
        return ChatMessage(role=self.role, content=self.text())


class ForwardedRequest(RoundTripModel):
    """A generation request (chat or completions) as it is forwarded: stop strings and the body sent upstream."""

    stop: str | list[str] | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def upstream_body(self, model: str) -> dict[str, Any]:
        """The body forwarded upstream: everything the client sent but our own option."""
        body = self.model_dump(exclude={"aligner"}, exclude_unset=True)
        body["model"] = model
        return body


class ChatCompletionRequest(ForwardedRequest):
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=16)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    aligner: AlignerOptions | None = None


class ResponseMessage(RoundTripModel):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(RoundTripModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None

    def alignable_text(self) -> str | None:
        """The answer's text, or ``None`` when there is nothing to align (a tool call, no content)."""
        return None if self.message.tool_calls or not self.message.content else self.message.content

    def replace_text(self, text: str) -> None:
        self.message.content = text


class Usage(RoundTripModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionResponse(RoundTripModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: str = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    aligner: AlignerAnnotation | None = None


class ChunkDelta(RoundTripModel):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(RoundTripModel):
    index: int
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: str | None = None


class ChatCompletionChunk(RoundTripModel):
    id: str
    object: str = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    aligner: AlignerAnnotation | None = None


# ----------------------------------------------------------------- completions


class CompletionRequest(ForwardedRequest):
    model: str
    prompt: str | Annotated[list[str], Field(min_length=1)]
    stream: bool = False
    n: int = Field(1, ge=1, le=16)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False
    aligner: AlignerOptions | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionChoice(RoundTripModel):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: Any = None

    def alignable_text(self) -> str | None:
        """The answer's text, or ``None`` when there is nothing to align (no text)."""
        return self.text or None

    def replace_text(self, text: str) -> None:
        self.text = text


class CompletionResponse(RoundTripModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: str = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    aligner: AlignerAnnotation | None = None


class CompletionChunk(RoundTripModel):
    id: str
    object: str = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice] = Field(default_factory=list)
    usage: Usage | None = None
    aligner: AlignerAnnotation | None = None


# ---------------------------------------------------------------- model list


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "aligner-proxy"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


# ------------------------------------------------------------- core over HTTP


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1, max_length=256)
    completions: list[str] = Field(min_length=1, max_length=256)


class ScoreResponse(BaseModel):
    scorer: str
    scores: list[float]


class CorrectItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str | list[ChatMessageIn]
    answer: str


class CorrectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[CorrectItem] = Field(min_length=1, max_length=64)
    mode: Mode = "always"
    threshold: float | None = None


# ------------------------------------------------------------ LiteLLM guardrail
# LiteLLM's Generic Guardrail API (``guardrail: generic_guardrail_api``), as LiteLLM 1.106.2 sends
# and reads it (litellm/types/proxy/guardrails/guardrail_hooks/generic_guardrail_api.py).

GuardrailAction = Literal["NONE", "GUARDRAIL_INTERVENED", "BLOCKED"]
"""NONE: leave the texts as they are; GUARDRAIL_INTERVENED: replace them with ``texts``; BLOCKED: fail the call."""


class GuardrailParams(BaseModel):
    """What the proxy reads of LiteLLM's ``additional_provider_specific_params`` (the guardrail's config,
    merged with a request's dynamic guardrail params): which route's policy applies, and options on it."""

    model_config = ConfigDict(extra="forbid")

    route: str | None = Field(None, description="the served model whose policy applies; default: the first route")
    aligner: AlignerOptions | None = None


class GuardrailRequest(BaseModel):
    """One guardrail call. ``input_type`` ``request`` is LiteLLM's pre_call / during_call (the request's
    messages in ``structured_messages``); ``response`` its post_call (the answer's texts in ``texts``,
    one per choice or text part). LiteLLM adds fields from version to version (headers, images, tools,
    key metadata); the proxy reads those it uses and ignores the rest."""

    model_config = ConfigDict(extra="ignore")

    input_type: Literal["request", "response"]
    texts: list[str] | None = Field(None, max_length=1024)
    structured_messages: list[ChatMessageIn] | None = Field(None, max_length=1024)
    litellm_call_id: str | None = Field(None, max_length=256)
    model: str | None = None
    additional_provider_specific_params: GuardrailParams | None = None


class GuardrailResponse(BaseModel):
    """The verdict LiteLLM applies: ``texts`` (with GUARDRAIL_INTERVENED) replace the texts it sent, in
    order; ``blocked_reason`` (with BLOCKED) is the message of the error its client receives.
    ``aligner`` is this proxy's annotation of the answer, for logs (LiteLLM ignores it)."""

    action: GuardrailAction
    texts: list[str] | None = None
    blocked_reason: str | None = None
    aligner: AlignerAnnotation | None = None


# --------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
