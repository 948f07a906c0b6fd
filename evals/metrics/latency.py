"""Latency and tokens per request, split by stage from the proxy's ``aligner`` annotation.

``latency_total_ms`` is measured by the harness around each request (so it
includes queueing at the target's concurrency); the stage timings are the
proxy's own ``aligner.timings``. A target without the annotation (a plain
upstream) counts its whole latency as upstream. ``upstream_tokens`` is the
response's ``usage.total_tokens``; ``corrector_tokens`` is
``aligner.corrector_usage.total_tokens`` (prompt and completion).
"""

from __future__ import annotations

from collections.abc import Callable

from evals.metrics import MetricContext, Sample, Value, sample_metric

# One latency metric per stage of a request: (metric, what it measures, the Sample field holding it).
_STAGES = [
    ("latency_total_ms", "request latency seen by the client", "total_ms"),
    ("latency_upstream_ms", "time spent waiting for the upstream model", "upstream_ms"),
    ("latency_scorer_ms", "time spent scoring (cost scorer)", "scorer_ms"),
    ("latency_corrector_ms", "time spent correcting (Aligner)", "corrector_ms"),
]


def _stage(field: str) -> Callable[[Sample, MetricContext], Value]:
    def value(sample: Sample, ctx: MetricContext) -> Value:
        return float(getattr(sample, field))

    return value


for _name, _description, _field in _STAGES:
    sample_metric(_name, description=_description, kind="latency", higher_is_better=False, unit="ms")(_stage(_field))


@sample_metric(
    "upstream_tokens",
    description="upstream tokens per request (usage.total_tokens)",
    kind="mean",
    higher_is_better=False,
    unit="tokens",
)
def upstream_tokens(sample: Sample, ctx: MetricContext) -> Value:
    return None if sample.upstream_tokens is None else float(sample.upstream_tokens)


@sample_metric(
    "corrector_tokens",
    description="corrector tokens per request (prompt + completion)",
    kind="mean",
    higher_is_better=False,
    unit="tokens",
)
def corrector_tokens(sample: Sample, ctx: MetricContext) -> Value:
    return float(sample.corrector_tokens)
