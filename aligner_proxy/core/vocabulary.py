"""The alignment policy's words, defined once: modes, statuses, failure policies, the block message,
and the two records made of them: :class:`PolicyConfig` (what the policy is asked to do) and
:class:`Outcome` (what it did to one answer).

The core's policy, the proxy's wire models and settings, the batch tools and
the evals all import these, so a new status or mode is added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["off", "always", "gated"]
"""off: pass answers through; always: correct every answer; gated: correct answers above the threshold."""

Status = Literal["passed", "modified", "flagged", "blocked", "unchecked", "skipped"]
"""What the policy did to one answer (the ``aligner`` annotation's ``status``)."""

FailurePolicy = Literal["fail_open", "fail_closed"]
"""What a scorer or corrector failure does: return the original ``unchecked``, or fail the request."""

DEFAULT_BLOCK_MESSAGE = (
    "I'm sorry, but I can't help with that request. If you have another question, I'm happy to help."
)
"""The text a blocked answer is replaced with, unless a route sets its own."""


@dataclass(frozen=True)
class PolicyConfig:
    """How one request's answers are aligned. The defaults are the proxy's route defaults."""

    mode: Mode = "gated"
    threshold: float | None = None  # None: the scorer's calibrated default
    block: bool = True  # on by default: training/choose_policy.py measured the trade-off
    block_message: str = DEFAULT_BLOCK_MESSAGE
    failure_policy: FailurePolicy = "fail_open"

    def with_overrides(
        self,
        *,
        mode: Mode | None = None,
        threshold: float | None = None,
        block: bool | None = None,
        failure_policy: FailurePolicy | None = None,
    ) -> PolicyConfig:
        """This config with a request's options applied: ``None`` keeps this config's value."""
        return PolicyConfig(
            mode=mode or self.mode,
            threshold=self.threshold if threshold is None else threshold,
            block=self.block if block is None else block,
            block_message=self.block_message,
            failure_policy=failure_policy or self.failure_policy,
        )


@dataclass
class Outcome:
    """The policy's verdict on one answer. ``text`` is what the client receives."""

    status: Status
    text: str
    original: str
    cost_before: float | None = None
    cost_after: float | None = None
    corrector_prompt_tokens: int = 0
    corrector_completion_tokens: int = 0
    scorer_ms: float = 0.0
    corrector_ms: float = 0.0
    error: str | None = None
    needs_correction: bool = False
