"""The alignment policy: score, correct, re-score, keep the better text, maybe block.

This is the core decision the proxy, the batch tools and the evals share. It
knows nothing of HTTP: it takes (question, answer) items and a
:class:`PolicyConfig` and returns one :class:`Outcome` per item.

Modes (Aligner, Ji et al. 2024, is applied *after* the upstream answers):

- ``off``: nothing is scored or corrected; status ``skipped``.
- ``always``: every answer is corrected; both texts are scored for the
  annotation; status ``modified`` when the text changed.
- ``gated``: the answer is scored; at or below ``threshold`` it is returned
  byte-identical (``passed``); above, it is corrected, the correction is
  re-scored and the less costly of the two texts is kept.

A text still above ``threshold`` after all that is never reported as fixed:
with ``block`` it is replaced by the block message (``blocked``), without it
it is returned as ``flagged`` (the corrector did not make it safe by the
scorer's judgement, and the client is told so). ``threshold=None`` means the
scorer's own calibrated threshold (``default_threshold``, 0.0 for scorers
without one). When the scorer or corrector fails or times
out, ``fail_open`` returns the original (``unchecked``, logged) and
``fail_closed`` raises :class:`~aligner_proxy.core.errors.AlignmentError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aligner_proxy.core.corrector import CorrectionInput, Corrector
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.core.microbatch import MicroBatcher
from aligner_proxy.core.scorer import CostScorer, default_threshold
from aligner_proxy.core.vocabulary import DEFAULT_BLOCK_MESSAGE, FailurePolicy, Mode, Status

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["AlignmentPipeline", "AsyncScorer", "FailurePolicy", "Mode", "Outcome", "PolicyConfig", "Status"]


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


@dataclass
class _Timer:
    start: float = field(default_factory=time.perf_counter)

    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0


class AlignmentPipeline:
    """Scorer + corrector + policy. One instance serves every request.

    :meth:`align` runs the whole policy. Streaming callers use the steps
    (:meth:`assess`, then the corrector's own stream, then :meth:`settle`)
    inside :meth:`guard` so the failure policy applies the same way.
    """

    def __init__(self, scorer: AsyncScorer, corrector: Corrector, *, timeout_s: float = 300.0) -> None:
        self.scorer = scorer
        self.corrector = corrector
        self.timeout_s = timeout_s

    async def aclose(self) -> None:
        self.scorer.close()
        await self.corrector.generator.aclose()

    def threshold(self, config: PolicyConfig) -> float:
        """The threshold ``config`` applies: its own, or the scorer's when it leaves it to the scorer."""
        return self.scorer.default_threshold if config.threshold is None else config.threshold

    def resolve(self, config: PolicyConfig) -> PolicyConfig:
        """``config`` with its threshold filled in (what annotations report)."""
        return config if config.threshold is not None else replace(config, threshold=self.threshold(config))

    async def align(
        self,
        items: list[CorrectionInput],
        config: PolicyConfig,
        *,
        score_prompts: list[str] | None = None,
        request_id: str = "-",
    ) -> list[Outcome]:
        """Apply ``config`` to every item. ``score_prompts`` overrides the scorer's prompt per item
        (e.g. the last user turn of a chat); by default the question is used as is."""
        if config.mode == "off" or not items:
            return [Outcome(status="skipped", text=item.answer, original=item.answer) for item in items]
        config = self.resolve(config)
        prompts = score_prompts or [question_text(item.question) for item in items]

        async def run() -> list[Outcome]:
            outcomes = await self.assess(items, prompts, config)
            await self.correct_assessed(items, prompts, outcomes, config)
            self.apply_block(outcomes, config)
            return outcomes

        def unchecked(reason: str) -> list[Outcome]:
            return [Outcome(status="unchecked", text=i.answer, original=i.answer, error=reason) for i in items]

        return await self.guard(run(), unchecked, config, request_id=request_id)

    async def guard(
        self, work: Awaitable[T], on_failure: Callable[[str], T], config: PolicyConfig, *, request_id: str = "-"
    ) -> T:
        """Run ``work`` under the time limit and the failure policy: on failure return
        ``on_failure(reason)`` (fail_open) or raise :class:`AlignmentError` (fail_closed)."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except Exception as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            if config.failure_policy == "fail_closed":
                logger.error("request %s: alignment failed (%s); failing closed", request_id, reason)
                raise AlignmentError(f"the alignment stage failed ({reason}) and this route fails closed") from exc
            logger.warning("request %s: alignment failed (%s); returning the original unchecked", request_id, reason)
            return on_failure(reason)

    async def assess(self, items: list[CorrectionInput], prompts: list[str], config: PolicyConfig) -> list[Outcome]:
        """Score the original answers; ``needs_correction`` says which ones the mode corrects."""
        answers = [item.answer for item in items]
        threshold = self.threshold(config)
        timer = _Timer()
        before = await self.scorer.score(prompts, answers)
        scorer_ms = timer.ms()
        return [
            Outcome(
                status="passed",
                text=answer,
                original=answer,
                cost_before=cost,
                scorer_ms=scorer_ms,
                needs_correction=config.mode == "always" or cost > threshold,
            )
            for answer, cost in zip(answers, before, strict=True)
        ]

    async def correct_assessed(
        self, items: list[CorrectionInput], prompts: list[str], outcomes: list[Outcome], config: PolicyConfig
    ) -> None:
        """Correct the assessed items that need it, re-score, and keep the better text."""
        todo = [i for i, outcome in enumerate(outcomes) if outcome.needs_correction]
        if not todo:
            return
        timer = _Timer()
        corrections = await self.corrector.correct([items[i] for i in todo])
        corrector_ms = timer.ms()
        timer = _Timer()
        after = await self.scorer.score([prompts[i] for i in todo], [c.text for c in corrections])
        rescore_ms = timer.ms()
        for i, correction, cost in zip(todo, corrections, after, strict=True):
            outcome = outcomes[i]
            outcome.corrector_ms = corrector_ms
            outcome.scorer_ms += rescore_ms
            outcome.corrector_prompt_tokens = correction.prompt_tokens
            outcome.corrector_completion_tokens = correction.completion_tokens
            self._choose(outcome, correction.text, cost, config)

    async def settle(self, outcome: Outcome, prompt: str, streamed: str, config: PolicyConfig) -> None:
        """Record a correction that was already streamed to the client: it is kept as sent
        (a stream cannot take text back), re-scored for the annotation, and ``flagged`` when it
        is still above the threshold (the stream could not be blocked after the fact)."""
        timer = _Timer()
        [cost] = await self.scorer.score([prompt], [streamed])
        outcome.scorer_ms += timer.ms()
        outcome.text = streamed
        outcome.cost_after = cost
        outcome.status = "modified" if streamed != outcome.original else "passed"
        if cost > self.threshold(config):
            outcome.status = "flagged"

    def apply_block(self, outcomes: list[Outcome], config: PolicyConfig) -> None:
        """The last word on a scored text still above the threshold: ``blocked`` with ``block``, else ``flagged``."""
        threshold = self.threshold(config)
        for outcome in outcomes:
            final_cost = outcome.cost_after if outcome.cost_after is not None else outcome.cost_before
            if final_cost is None or final_cost <= threshold or outcome.status in ("unchecked", "skipped"):
                continue
            if config.block:
                outcome.status = "blocked"
                outcome.text = config.block_message
            else:
                outcome.status = "flagged"

    @staticmethod
    def _choose(outcome: Outcome, correction: str, cost: float, config: PolicyConfig) -> None:
        """Keep the correction in ``always`` mode (unless empty); in ``gated`` keep the less costly text."""
        if not correction.strip():
            # An empty correction is a corrector failure, never an answer.
            outcome.cost_after = outcome.cost_before
            return
        before = outcome.cost_before if outcome.cost_before is not None else float("inf")
        if config.mode == "always" or cost < before:
            outcome.text = correction
            outcome.cost_after = cost
            outcome.status = "modified" if correction != outcome.original else "passed"
        else:
            outcome.cost_after = before


def question_text(question: object) -> str:
    """The text a scorer sees as the prompt: the question, or a chat's last user turn."""
    if isinstance(question, str):
        return question
    # A chat history: score against the last user turn, which is what the answer answers.
    turns = [getattr(message, "content", "") for message in question if getattr(message, "role", "") == "user"]  # type: ignore[attr-defined]
    return str(turns[-1]) if turns else ""
