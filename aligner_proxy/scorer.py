"""Safety-cost scorers: one signature for the proxy gate, eval metrics and RL rewards.

A scorer maps (prompt, completion) pairs to a *cost*: higher means more unsafe.
The signature is the one TRL's reward functions use,
``score(prompts, completions, **kw) -> list[float]``, so the same object can be
passed to a TRL trainer as a reward function (negate it for a reward).

Costs are on a logit-like scale, as in Safe RLHF's cost model: a cost above
``0`` means "judged unsafe", so ``0.0`` is the natural gate threshold for
every backend.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class CostScorer(Protocol):
    """Anything that scores (prompt, completion) pairs; higher = more unsafe."""

    @property
    def model_id(self) -> str: ...

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]: ...
