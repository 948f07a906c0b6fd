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

Streamed answers follow the same rules through
:meth:`AlignmentPipeline.stream_correction`, with the one difference a stream
imposes: text already sent cannot be taken back. So with ``block`` the whole
correction is made before anything is sent, and without it the corrector's
stream is relayed and a correction still above the threshold is ``flagged``;
a failure after the first piece ends the answer with an error, whatever the
failure policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TypeVar

from aligner_proxy.core.corrector import CorrectionInput, Corrector, question_text
from aligner_proxy.core.errors import AlignmentError
from aligner_proxy.core.redact import redact_text
from aligner_proxy.core.scorer import AsyncScorer
from aligner_proxy.core.vocabulary import FailurePolicy, Mode, Outcome, PolicyConfig, Status

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "AlignmentPipeline",
    "AsyncScorer",
    "CorrectionStream",
    "FailurePolicy",
    "Mode",
    "Outcome",
    "PolicyConfig",
    "Status",
]


@dataclass
class _Timer:
    start: float = field(default_factory=time.perf_counter)

    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0


class AlignmentPipeline:
    """Scorer + corrector + policy. One instance serves every request.

    :meth:`align` runs the whole policy on whole answers. A streamed answer takes
    the same policy in two steps: :meth:`assess` scores the originals, then
    :meth:`stream_correction` gives each assessed answer's final text as pieces
    to send as they come, and its :class:`Outcome` once they have all gone. Both
    forms share one failure policy, time limit, empty-correction rule, keep-best
    and verdict on a text still above the threshold.
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
            return _skipped(items)
        config = self.resolve(config)
        prompts = score_prompts or [question_text(item.question) for item in items]

        async def run() -> list[Outcome]:
            outcomes = await self._score_originals(items, prompts, config)
            await self._correct(items, prompts, outcomes, config)
            self._verdict(outcomes, config)
            return outcomes

        return await self._guard(run(), lambda reason: _unchecked(items, reason), config, request_id)

    async def assess(
        self, items: list[CorrectionInput], prompts: list[str], config: PolicyConfig, *, request_id: str = "-"
    ) -> list[Outcome]:
        """Score the original answers against ``prompts`` (the scorer's prompt per item): the first
        step of a streamed answer, followed by :meth:`stream_correction` for each item.

        ``needs_correction`` says which ones the mode corrects. Under the time limit and the
        failure policy: a failure makes every item ``unchecked`` (fail_open) or raises
        :class:`AlignmentError` (fail_closed)."""
        if config.mode == "off" or not items:
            return _skipped(items)
        config = self.resolve(config)
        assessed = self._score_originals(items, prompts, config)
        return await self._guard(assessed, lambda reason: _unchecked(items, reason), config, request_id)

    def stream_correction(
        self, item: CorrectionInput, prompt: str, outcome: Outcome, config: PolicyConfig, *, request_id: str = "-"
    ) -> CorrectionStream:
        """The text the client receives for ``item``, assessed as ``outcome`` by :meth:`assess`.

        - Nothing to correct (passed, unchecked, skipped): the assessed text, in one piece.
        - ``block``: a text that may still be replaced by the block message cannot be sent
          before it is judged, so the whole correction is made (keep-best, block), then sent.
        - Otherwise the corrector's own token stream, relayed as it is written, then re-scored
          against ``prompt``: ``modified`` if the text changed, ``flagged`` if it is still above
          the threshold (it cannot be blocked once sent). An empty correction never replaces the
          answer: the original is sent instead. A failure before the first piece follows the
          failure policy (fail_open sends the original, ``unchecked``); after it, see
          :class:`CorrectionStream`.

        ``outcome`` itself is left as it is; the stream's :attr:`CorrectionStream.outcome` is a copy.
        """
        config = self.resolve(config)
        final = replace(outcome)
        if not final.needs_correction:
            pieces = _one_piece(final.text)
        elif config.block:
            pieces = self._whole_correction(item, prompt, final, config, request_id)
        else:
            pieces = self._relayed_correction(item, prompt, final, config, request_id)
        return CorrectionStream(pieces, final)

    # ------------------------------------------------------------------ steps

    async def _guard(
        self, work: Awaitable[T], on_failure: Callable[[str], T], config: PolicyConfig, request_id: str
    ) -> T:
        """Run ``work`` under the time limit and the failure policy: on a fail_open failure
        return ``on_failure(reason)``; on a fail_closed one raise :class:`AlignmentError`."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure is the failure policy's to decide; _fail logs it
            return on_failure(_fail(exc, config, request_id))

    async def _score_originals(
        self, items: list[CorrectionInput], prompts: list[str], config: PolicyConfig
    ) -> list[Outcome]:
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

    async def _correct(
        self, items: list[CorrectionInput], prompts: list[str], outcomes: list[Outcome], config: PolicyConfig
    ) -> None:
        """Correct the assessed items that need it in one batch, re-score, and keep the better text."""
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
            if correction.finish_reason == "loop":
                # A correction the loop guard had to cut repeats itself: never an answer to send. The
                # original stays, judged on its own cost (the verdict blocks or flags it if it must).
                outcome.cost_after, outcome.error = outcome.cost_before, LOOPED_CORRECTION
                continue
            _take_correction(outcome, correction.text, cost, config, keep_best=config.mode != "always")

    async def _whole_correction(
        self, item: CorrectionInput, prompt: str, outcome: Outcome, config: PolicyConfig, request_id: str
    ) -> AsyncGenerator[str, None]:
        """Correct one assessed answer in full (keep-best and block apply), then send it in one piece."""

        async def run() -> None:
            await self._correct([item], [prompt], [outcome], config)
            self._verdict([outcome], config)

        await self._guard(run(), lambda reason: _fall_back(outcome, reason), config, request_id)
        yield outcome.text

    async def _relayed_correction(
        self, item: CorrectionInput, prompt: str, outcome: Outcome, config: PolicyConfig, request_id: str
    ) -> AsyncGenerator[str, None]:
        """Relay the corrector's token stream, then record and re-score what was sent."""
        sent: list[str] = []
        failure: str | None = None
        timer = _Timer()
        waited_s = 0.0  # the time limit counts the waits for the corrector, not the caller's time between pieces
        async with aclosing(self.corrector.stream(item)) as pieces:
            while True:
                wait = _Timer()
                try:
                    async with asyncio.timeout(self.timeout_s - waited_s):
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    if sent:  # sent text cannot be taken back, whatever the failure policy
                        reason = _reason(exc)
                        logger.error("request %s: corrector stream failed: %s", request_id, _detail(exc))
                        outcome.status, outcome.text, outcome.error = "unchecked", "".join(sent), reason
                        raise AlignmentError(f"the corrector failed mid-stream ({reason})") from exc
                    failure = _fail(exc, config, request_id)
                    break
                waited_s += wait.ms() / 1000.0
                if piece:
                    sent.append(piece)
                    yield piece
        if failure is not None:
            _fall_back(outcome, failure)
            yield outcome.original
            return
        outcome.corrector_ms = timer.ms()
        text = "".join(sent)
        try:
            _take_correction(outcome, text, None, config, keep_best=False)  # kept as sent, unless empty
        except EmptyCorrectionError as exc:
            _fail(exc, config, request_id)  # fail_closed: nothing was sent, so the request fails
        if not text.strip():
            self._verdict([outcome], config)  # the original, judged on its own cost
            yield outcome.original
            return
        await self._guard(self._rescore(outcome, prompt, config), lambda _reason: None, config, request_id)

    async def _rescore(self, outcome: Outcome, prompt: str, config: PolicyConfig) -> None:
        """Score a correction already sent, for the annotation and the verdict."""
        timer = _Timer()
        [cost] = await self.scorer.score([prompt], [outcome.text])
        outcome.scorer_ms += timer.ms()
        outcome.cost_after = cost
        self._verdict([outcome], config)  # only a relayed stream is re-scored, and it never blocks

    def _verdict(self, outcomes: list[Outcome], config: PolicyConfig) -> None:
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


class CorrectionStream:
    """One answer's final text, piece by piece as the client receives it, and then its verdict.

    ``async for piece in stream`` yields the pieces in order; :attr:`outcome` is final
    once the iteration ends. The iteration raises :class:`AlignmentError` when the
    route fails closed, and when the corrector fails after its first piece went out:
    sent text cannot be taken back, so the answer ends there whatever the failure
    policy, and :attr:`outcome` says ``unchecked``, with the reason and the text sent.
    Close the stream (``aclose``, or ``contextlib.aclosing``) when you stop early:
    the corrector's generation stops with it.
    """

    def __init__(self, pieces: AsyncGenerator[str, None], outcome: Outcome) -> None:
        self._pieces = pieces
        self.outcome = outcome

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces

    async def aclose(self) -> None:
        await self._pieces.aclose()


def _skipped(items: list[CorrectionInput]) -> list[Outcome]:
    return [Outcome(status="skipped", text=item.answer, original=item.answer) for item in items]


def _unchecked(items: list[CorrectionInput], reason: str) -> list[Outcome]:
    return [Outcome(status="unchecked", text=item.answer, original=item.answer, error=reason) for item in items]


def _fall_back(outcome: Outcome, reason: str) -> None:
    """fail_open on an assessed answer: the original goes out unchecked (its first score is kept)."""
    outcome.status, outcome.text, outcome.error = "unchecked", outcome.original, reason


class EmptyCorrectionError(Exception):
    """The corrector wrote nothing usable: a corrector failure, never an answer."""


EMPTY_CORRECTION = "the corrector returned an empty correction"
LOOPED_CORRECTION = "the correction fell into a repetition loop"


def _reason(exc: Exception) -> str:
    """What a client may see of a failure (annotation, 503 message): its kind, never its message,
    which can carry internal URLs and hosts. The logs get :func:`_detail`."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return EMPTY_CORRECTION if isinstance(exc, EmptyCorrectionError) else type(exc).__name__


def _detail(exc: Exception) -> str:
    """A failure for the logs: its kind and message, secrets redacted."""
    return "timed out" if isinstance(exc, TimeoutError) else redact_text(f"{type(exc).__name__}: {exc}")


def _fail(exc: Exception, config: PolicyConfig, request_id: str) -> str:
    """The failure policy, for whole and streamed answers alike: fail_closed raises
    :class:`AlignmentError`; fail_open logs and returns the reason for the caller's fallback."""
    reason = _reason(exc)
    if config.failure_policy == "fail_closed":
        logger.error("request %s: alignment failed (%s); failing closed", request_id, _detail(exc))
        raise AlignmentError(
            f"the alignment stage failed ({reason}) and this route fails closed", detail=_detail(exc)
        ) from exc
    logger.warning("request %s: alignment failed (%s); failing open", request_id, _detail(exc))
    return reason


def _take_correction(
    outcome: Outcome, correction: str, cost: float | None, config: PolicyConfig, *, keep_best: bool
) -> None:
    """Record a correction: the one owner of the empty-correction rule and of ``modified``.

    An empty correction is a corrector failure, never an answer: under fail_closed it raises
    :class:`EmptyCorrectionError`; under fail_open the original stays, judged on its own cost,
    and ``error`` says what happened.
    ``keep_best`` (gated, whole answers) also keeps the original when the correction
    is not less costly. The status is ``modified`` only when the text changed."""
    before = outcome.cost_before if outcome.cost_before is not None else float("inf")
    if not correction.strip():
        if config.failure_policy == "fail_closed":
            raise EmptyCorrectionError(EMPTY_CORRECTION)
        outcome.cost_after = outcome.cost_before
        outcome.error = EMPTY_CORRECTION
        return
    if keep_best and cost is not None and not cost < before:
        outcome.cost_after = before
        return
    outcome.text = correction
    outcome.cost_after = cost
    outcome.status = "modified" if correction != outcome.original else "passed"


async def _one_piece(text: str) -> AsyncGenerator[str, None]:
    yield text
