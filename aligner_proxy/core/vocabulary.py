"""The alignment policy's words, defined once: modes, statuses, failure policies, the block message.

The core's policy, the proxy's wire models and settings, the batch tools and
the evals all import these, so a new status or mode is added in one place.
"""

from __future__ import annotations

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
