"""The pairwise LLM-judge score of final vs original answers (see :mod:`evals.judge`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from evals.judge import judge_both_orders
from evals.metrics import MetricContext, Sample, Value, batch_metric


@batch_metric(
    "judge_score",
    description="LLM judge, final vs original answer, both orders: (wins − losses) / comparisons",
    kind="pairwise",
    higher_is_better=True,
    requires="judge",
)
async def judge_score(samples: Sequence[Sample], ctx: MetricContext) -> list[Value]:
    if ctx.judge is None:
        return [None] * len(samples)
    results = await asyncio.gather(*(judge_both_orders(ctx.judge, s.prompt, s.original, s.answer) for s in samples))
    return list(results)
