"""Bootstrap intervals and the reduction of per-sample values."""

from __future__ import annotations

import pytest

from evals.stats import bootstrap_ci, summarize


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = [0.0, 1.0] * 50
    ci = bootstrap_ci(values, resamples=2000, seed=3)
    assert ci is not None
    low, high = ci
    assert 0.35 < low < 0.5 < high < 0.65
    assert bootstrap_ci(values, resamples=2000, seed=3) == ci
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_ci([1.0]) is None
    assert bootstrap_ci(values, resamples=0) is None


def test_a_wider_confidence_gives_a_wider_interval() -> None:
    values = [float(i % 3 == 0) for i in range(60)]
    narrow, wide = bootstrap_ci(values, confidence=0.5), bootstrap_ci(values, confidence=0.99)
    assert narrow is not None and wide is not None
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_summarize_rates_means_and_latencies() -> None:
    rate = summarize([1.0, 0.0, None, 1.0, 1.0], "rate")
    assert rate.value == 0.75 and rate.n == 4 and rate.ci_low is not None and rate.ci_low <= 0.75 <= rate.ci_high
    latency = summarize([float(v) for v in range(1, 101)], "latency")
    assert latency.value == latency.p50 == pytest.approx(50.5)
    assert latency.p95 == pytest.approx(95.05) and latency.mean == pytest.approx(50.5) and latency.ci_low is None
    empty = summarize([None, None], "rate")
    assert empty.value is None and empty.n == 0
