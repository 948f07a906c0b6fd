"""Latency and tokens per request, split by stage from the proxy's ``aligner`` annotation.

``latency_total_ms`` is measured by the harness around each request (so it
includes queueing at the target's concurrency); the stage timings are the
proxy's own ``aligner.timings``. A target without the annotation (a plain
upstream) counts its whole latency as upstream. ``upstream_tokens`` is the
response's ``usage.total_tokens``; ``corrector_tokens`` is
``aligner.corrector_usage.total_tokens`` (prompt and completion).
"""

from __future__ import annotations

from evals.metrics import MetricContext, Sample, Value, sample_metric


@sample_metric(
    "latency_total_ms",
    description="request latency seen by the client",
    kind="latency",
    higher_is_better=False,
    unit="ms",
)
def latency_total_ms(sample: Sample, ctx: MetricContext) -> Value:
    return sample.total_ms


@sample_metric(
    "latency_upstream_ms",
    description="time spent waiting for the upstream model",
    kind="latency",
    higher_is_better=False,
    unit="ms",
)
def latency_upstream_ms(sample: Sample, ctx: MetricContext) -> Value:
    return sample.upstream_ms


@sample_metric(
    "latency_scorer_ms",
    description="time spent scoring (cost scorer)",
    kind="latency",
    higher_is_better=False,
    unit="ms",
)
def latency_scorer_ms(sample: Sample, ctx: MetricContext) -> Value:
    return sample.scorer_ms


@sample_metric(
    "latency_corrector_ms",
    description="time spent correcting (Aligner)",
    kind="latency",
    higher_is_better=False,
    unit="ms",
)
def latency_corrector_ms(sample: Sample, ctx: MetricContext) -> Value:
    return sample.corrector_ms


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
