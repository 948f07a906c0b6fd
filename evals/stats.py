"""Reducing per-sample values to a reported number: means with bootstrap intervals, latency percentiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from evals.metrics import Kind


class MetricResult(BaseModel):
    """One metric for one target. ``value`` is the mean (rate, mean, pairwise) or the p50 (latency)."""

    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    p50: float | None = None
    p95: float | None = None
    mean: float | None = None


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani, 1993); ``None`` for < 2 values."""
    if len(values) < 2 or resamples <= 0:
        return None
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def summarize(
    values: Sequence[float | None],
    kind: Kind,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MetricResult:
    """The reported result of a metric over the samples it applies to (``None`` values are left out)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return MetricResult(value=None, n=0)
    data = np.asarray(present)
    mean = float(data.mean())
    if kind == "latency":
        p50, p95 = (float(q) for q in np.percentile(data, [50, 95]))
        return MetricResult(value=p50, n=len(present), p50=p50, p95=p95, mean=mean)
    ci = bootstrap_ci(present, resamples=resamples, confidence=confidence, seed=seed)
    return MetricResult(
        value=mean,
        n=len(present),
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        mean=mean,
    )
