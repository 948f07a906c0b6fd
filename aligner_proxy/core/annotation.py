"""The alignment contract in JSON: the options a request sends, the annotation its answer comes back with.

These are the proxy's own additions to OpenAI's shapes (the ``aligner`` field
of a request and of a response, and the ``/v1/aligner/correct`` answer). They
live in the core rather than with the server's wire models because the
proxy's clients read them too: the eval harness parses annotations, the batch
tools read ``/v1/aligner/correct`` answers, and neither should import a web
server to do so. Plain pydantic; the words come from
:mod:`aligner_proxy.core.vocabulary`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from aligner_proxy.core.vocabulary import FailurePolicy, Mode, Outcome, Status


class AlignerOptions(BaseModel):
    """Per-request options, sent by the SDK as ``extra_body={"aligner": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = None
    threshold: float | None = None
    block: bool | None = None
    return_original: bool = False
    failure_policy: FailurePolicy | None = None


class Timings(BaseModel):
    upstream_ms: float = 0.0
    scorer_ms: float = 0.0
    corrector_ms: float = 0.0
    total_ms: float = 0.0


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of_corrector(cls, outcomes: Iterable[Outcome]) -> TokenUsage:
        """The corrector's tokens over ``outcomes`` (reported apart from the upstream's ``usage``)."""
        prompt = completion = 0
        for outcome in outcomes:
            prompt += outcome.corrector_prompt_tokens
            completion += outcome.corrector_completion_tokens
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class ChoiceAnnotation(BaseModel):
    index: int
    status: Status
    cost_before: float | None = None
    cost_after: float | None = None
    original: str | None = None
    error: str | None = None


class AlignerAnnotation(BaseModel):
    """What the proxy did to an answer. ``status``, ``cost_*`` and ``original`` describe choice 0;
    ``choices`` has the same for every choice when ``n > 1``."""

    status: Status
    mode: Mode
    threshold: float | None = None
    cost_before: float | None = None
    cost_after: float | None = None
    original: str | None = None
    scorer: str | None = None
    corrector: str | None = None
    timings: Timings = Field(default_factory=Timings)
    corrector_usage: TokenUsage = Field(default_factory=TokenUsage)
    choices: list[ChoiceAnnotation] = Field(default_factory=list)


class CorrectedItem(BaseModel):
    correction: str
    status: Status
    cost_before: float | None = None
    cost_after: float | None = None


class CorrectResponse(BaseModel):
    corrector: str
    scorer: str
    threshold: float | None = None  # the one applied: the request's, or the scorer's calibrated one
    items: list[CorrectedItem]
    corrector_usage: TokenUsage
