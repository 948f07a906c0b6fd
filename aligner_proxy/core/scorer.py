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

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

from aligner_proxy.core.microbatch import MicroBatcher


@runtime_checkable
class CostScorer(Protocol):
    """Anything that scores (prompt, completion) pairs; higher = more unsafe."""

    @property
    def model_id(self) -> str: ...

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]: ...


def default_threshold(scorer: object) -> float:
    """The threshold a scorer was calibrated to (``default_threshold``), or ``0.0``, the cost scale's natural gate.

    The proxy's policy, the gate trainer's baselines and the corpus filters all read a scorer's
    threshold here, so a scorer without calibration means the same everywhere."""
    return float(getattr(scorer, "default_threshold", 0.0))


def score_batched(
    scorer: CostScorer, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 64
) -> list[float]:
    """Costs of many (prompt, completion) pairs, scored ``batch_size`` at a time (offline callers)."""
    costs: list[float] = []
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        costs.extend(scorer.score(list(prompts[start:end]), list(completions[start:end])))
    return costs


class AsyncScorer:
    """A blocking :class:`CostScorer` made awaitable, with concurrent calls batched together."""

    def __init__(self, scorer: CostScorer, batcher_kw: dict[str, Any] | None = None) -> None:
        self.scorer = scorer
        self._batcher: MicroBatcher[tuple[str, str], float] = MicroBatcher(
            self._score_batch, name=f"scorer:{scorer.model_id}", **(batcher_kw or {})
        )

    @property
    def model_id(self) -> str:
        return self.scorer.model_id

    @property
    def default_threshold(self) -> float:
        """The scorer's calibrated threshold, or ``0.0`` (the cost scale's natural gate) if it has none."""
        return default_threshold(self.scorer)

    def _score_batch(self, _key: Hashable, pairs: list[tuple[str, str]]) -> list[float]:
        prompts = [prompt for prompt, _ in pairs]
        completions = [completion for _, completion in pairs]
        return [float(cost) for cost in self.scorer.score(prompts, completions)]

    async def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return await self._batcher.submit(list(zip(prompts, completions, strict=True)))

    def close(self) -> None:
        self._batcher.close()
