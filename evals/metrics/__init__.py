"""Metrics: small functions over one answer (prompt, answer, metadata), registered by name.

A metric module in this package registers its functions with
:func:`sample_metric` (one :class:`Sample` → one value) or
:func:`batch_metric` (all of a target's samples at once, for a model or a judge
that is cheaper in batches; it may be ``async``). A value of ``None`` means
"does not apply to this sample". The runner reduces values by ``kind``:

- ``rate`` / ``mean``: the mean, with a bootstrap confidence interval;
- ``pairwise``: the mean of +1 / 0 / -1 verdicts, i.e. (wins − losses) / total;
- ``latency``: p50 (the headline value), p95 and the mean, no interval.

``labels`` says which prompts a metric is reported on (``None`` inside the set
means unlabelled prompts): refusal is wanted on harmful prompts and unwanted on
benign ones, so they are two metrics over the same judge.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evals.loaders import Label
from evals.registry import Registry, import_modules

Kind = Literal["rate", "mean", "pairwise", "latency"]
Requirement = Literal["reward_model", "judge"]


@dataclass(frozen=True)
class Sample:
    """One answer of one target to one prompt, with what the proxy said about it.

    ``original`` is the upstream's answer before alignment (the proxy's
    ``aligner.original``, requested with ``return_original``); for a target that
    reports none (a plain upstream) it is the answer itself. Timings are in ms;
    ``total_ms`` is measured by the harness, the others come from the proxy's
    ``aligner.timings`` (a plain upstream's ``upstream_ms`` is its total).
    """

    task: str
    prompt_id: str
    prompt: str
    label: Label | None
    answer: str
    original: str
    status: str | None = None
    cost_before: float | None = None
    cost_after: float | None = None
    total_ms: float = 0.0
    upstream_ms: float = 0.0
    scorer_ms: float = 0.0
    corrector_ms: float = 0.0
    upstream_tokens: int | None = None
    corrector_tokens: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricContext:
    """What metrics may use besides the sample: the cost scorer, a reward model, a judge.

    ``scorer`` and ``reward_model`` are :class:`~aligner_proxy.core.scorer.CostScorer`\\ s;
    ``reward_sign`` turns the reward model's output into a reward (``-1`` for a
    model saved as a cost, as ``training.reward_model`` saves by default).
    """

    scorer: Any
    unsafe_threshold: float = 0.0
    reward_model: Any | None = None
    reward_sign: float = 1.0
    judge: Any | None = None


Value = float | None
BatchFn = Callable[[Sequence[Sample], MetricContext], "list[Value] | Awaitable[list[Value]]"]
SampleFn = Callable[[Sample, MetricContext], Value]


@dataclass(frozen=True)
class Metric:
    """A registered metric: how to compute it and how to read it."""

    name: str
    compute: BatchFn
    description: str
    kind: Kind = "rate"
    higher_is_better: bool | None = None
    labels: frozenset[Label | None] | None = None
    requires: Requirement | None = None
    unit: str = ""

    def applies_to(self, sample: Sample) -> bool:
        return self.labels is None or sample.label in self.labels

    async def values(self, samples: Sequence[Sample], ctx: MetricContext) -> list[Value]:
        """One value per sample (``None`` where it does not apply); awaits an async metric."""
        result = self.compute(samples, ctx)
        values = await result if inspect.isawaitable(result) else result
        if len(values) != len(samples):
            raise ValueError(f"metric {self.name} returned {len(values)} values for {len(samples)} samples")
        return list(values)


METRICS: Registry[Metric] = Registry("metric", import_modules(__name__))


def batch_metric(
    name: str,
    *,
    description: str,
    kind: Kind = "rate",
    higher_is_better: bool | None = None,
    labels: set[Label | None] | None = None,
    requires: Requirement | None = None,
    unit: str = "",
) -> Callable[[BatchFn], BatchFn]:
    """Register a function from all samples of a target to one value each (may be ``async``)."""

    def wrap(fn: BatchFn) -> BatchFn:
        METRICS.register(
            name,
            Metric(
                name=name,
                compute=fn,
                description=description,
                kind=kind,
                higher_is_better=higher_is_better,
                labels=frozenset(labels) if labels is not None else None,
                requires=requires,
                unit=unit,
            ),
        )
        return fn

    return wrap


def sample_metric(
    name: str,
    *,
    description: str,
    kind: Kind = "rate",
    higher_is_better: bool | None = None,
    labels: set[Label | None] | None = None,
    requires: Requirement | None = None,
    unit: str = "",
) -> Callable[[SampleFn], SampleFn]:
    """Register a function from one sample to one value."""

    def wrap(fn: SampleFn) -> SampleFn:
        def compute(samples: Sequence[Sample], ctx: MetricContext) -> list[Value]:
            return [fn(sample, ctx) for sample in samples]

        batch_metric(
            name,
            description=description,
            kind=kind,
            higher_is_better=higher_is_better,
            labels=labels,
            requires=requires,
            unit=unit,
        )(compute)
        return fn

    return wrap
