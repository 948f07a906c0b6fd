"""Replay: the core's policy run in this process on answers a proxy target already got from its upstream.

A candidate corrector or gate is judged on the same upstream answers the
shipped one saw, without a second generation and without restarting a proxy:
the source target's annotations carry each ``original``, and the upstream
decodes greedily, so the proxy would have handed exactly these answers to the
policy. What differs from the proxy is only where the policy runs, so the
policy's outputs (text, status, costs) are comparable and its timings are not
(they are this process's, batched differently).

Results are cached like answers: the key covers the core's configuration, the
policy, the question and the original, so a re-run only corrects what is new.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aligner_proxy.core.annotation import AlignerAnnotation, AlignerOptions, Timings, TokenUsage
from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.loading import CoreConfig, load_pipeline
from aligner_proxy.core.policy import AlignmentPipeline, Outcome, PolicyConfig
from evals.answers import CachedAnswer, ItemAnswer, chat_messages, originals
from evals.cache import JsonlCache, cache_key
from evals.config import EvalConfig, TargetConfig

logger = logging.getLogger(__name__)

CHUNK = 16
"""Items per ``align`` call; several calls run at once so the core's micro-batchers fill up."""

OFFLINE_TIMEOUT_S = 24 * 3600.0


@dataclass(frozen=True)
class Replayed:
    """The policy's verdict on one answer, and the ids of the models that gave it."""

    outcome: Outcome
    scorer: str
    corrector: str
    threshold: float | None


def core_config(fields: dict[str, Any]) -> CoreConfig:
    """A :class:`CoreConfig` from a target's ``core`` mapping; unknown fields are a config error."""
    try:
        return CoreConfig(**fields)
    except TypeError as exc:
        raise ValueError(f"core: {exc}") from None


def policy_for(options: AlignerOptions | None) -> PolicyConfig:
    """The route defaults (``make serve``'s) with the target's per-request options, as the proxy merges them."""
    if options is None:
        return PolicyConfig()
    return PolicyConfig().with_overrides(
        mode=options.mode, threshold=options.threshold, block=options.block, failure_policy=options.failure_policy
    )


async def replay(
    core: CoreConfig,
    options: AlignerOptions | None,
    questions: Sequence[list[ChatMessage]],
    originals: Sequence[str],
    cache: JsonlCache,
    *,
    salt: str = "",
) -> list[Replayed]:
    """Apply the policy to each (question, original) pair, from the cache where it can."""
    policy = policy_for(options)
    keys = [
        cache_key(
            "replay",
            {
                "core": {k: str(v) for k, v in asdict(core).items() if k != "corrector_api_key"},
                "policy": asdict(policy),
                "question": [asdict(m) for m in question],
                "original": original,
                "salt": salt,
            },
        )
        for question, original in zip(questions, originals, strict=True)
    ]
    results: list[Replayed | None] = [_from_cache(cache.get(key)) for key in keys]
    todo = [i for i, result in enumerate(results) if result is None]
    if todo:
        logger.info("replay: %d of %d answers to align in process", len(todo), len(keys))
        pipeline = await asyncio.to_thread(load_pipeline, core)
        # Offline: every chunk is queued at once, so the proxy's per-answer limit would only
        # turn waiting into 'unchecked'.
        pipeline.timeout_s = OFFLINE_TIMEOUT_S
        try:
            resolved = pipeline.resolve(policy)
            chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
            done = await asyncio.gather(*(_align(pipeline, resolved, questions, originals, c) for c in chunks))
            for chunk, outcomes in zip(chunks, done, strict=True):
                for i, outcome in zip(chunk, outcomes, strict=True):
                    result = Replayed(
                        outcome, pipeline.scorer.model_id, pipeline.corrector.model_id, resolved.threshold
                    )
                    cache.put(keys[i], _to_cache(result))
                    results[i] = result
        finally:
            await pipeline.aclose()
    return [r for r in results if r is not None]


async def _align(
    pipeline: AlignmentPipeline,
    policy: PolicyConfig,
    questions: Sequence[list[ChatMessage]],
    originals: Sequence[str],
    chunk: list[int],
) -> list[Outcome]:
    items = [CorrectionInput(question=questions[i], answer=originals[i]) for i in chunk]
    return await pipeline.align(items, policy)


def _to_cache(result: Replayed) -> dict[str, Any]:
    return {
        "outcome": asdict(result.outcome),
        "scorer": result.scorer,
        "corrector": result.corrector,
        "threshold": result.threshold,
    }


def _from_cache(value: dict[str, Any] | None) -> Replayed | None:
    if value is None:
        return None
    return Replayed(Outcome(**value["outcome"]), value["scorer"], value["corrector"], value["threshold"])


async def replayed(
    config: EvalConfig, target: TargetConfig, source: Sequence[ItemAnswer], cache: JsonlCache
) -> tuple[list[ItemAnswer], int]:
    """``target``'s answers: the core's policy run here on the source's upstream answers (evals/replay.py).

    Latency is the source's upstream time plus this process's scoring and correction: comparable
    between replays, not with a proxy target's."""
    ups = originals(source)
    ok = [(i, o.answer) for i, o in enumerate(ups) if o.answer is not None]
    questions = [chat_messages(config, ups[i].item.task, ups[i].item.prompt) for i, _ in ok]
    before = len(cache)
    verdicts = await replay(
        core_config(target.core), target.aligner, questions, [a.answer for _, a in ok], cache, salt=target.cache_salt
    )
    result = list(ups)
    for (i, upstream), verdict in zip(ok, verdicts, strict=True):
        o = verdict.outcome
        timings = Timings(
            upstream_ms=upstream.latency_ms,
            scorer_ms=o.scorer_ms,
            corrector_ms=o.corrector_ms,
            total_ms=upstream.latency_ms + o.scorer_ms + o.corrector_ms,
        )
        usage = TokenUsage.of_corrector([o])
        annotation = AlignerAnnotation(
            status=o.status,
            mode=policy_for(target.aligner).mode,
            threshold=verdict.threshold,
            cost_before=o.cost_before,
            cost_after=o.cost_after,
            original=o.original,
            scorer=verdict.scorer,
            corrector=verdict.corrector,
            timings=timings,
            corrector_usage=usage,
        )
        answer = CachedAnswer(
            answer=o.text,
            original=o.original,
            aligner=annotation,
            total_tokens=upstream.total_tokens,
            latency_ms=timings.total_ms,
            model=upstream.model,
        )
        result[i] = ItemAnswer(ups[i].item, answer)
    return result, len(cache) - before
