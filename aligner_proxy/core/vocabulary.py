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

    def relaxed_by(self, other: PolicyConfig) -> dict[str, str]:
        """What ``other`` relaxes of this config, by field: what a policy floor forbids a client.

        Correcting every answer is stricter than gating, gating than nothing; a higher threshold
        lets more through; block off and fail-open return more. Compare resolved configs (both
        thresholds set), or an unset threshold compares as equal."""
        strictness = {"off": 0, "gated": 1, "always": 2}
        relaxed = {}
        if strictness[other.mode] < strictness[self.mode]:
            relaxed["mode"] = f"{self.mode} -> {other.mode}"
        if self.threshold is not None and other.threshold is not None and other.threshold > self.threshold:
            relaxed["threshold"] = f"{self.threshold:g} -> {other.threshold:g}"
        if self.block and not other.block:
            relaxed["block"] = "on -> off"
        if self.failure_policy == "fail_closed" and other.failure_policy == "fail_open":
            relaxed["failure_policy"] = "fail_closed -> fail_open"
        return relaxed


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
