"""The Safe RLHF multiplier update (training/rl/lagrangian.py)."""

from __future__ import annotations

import math

import pytest

from training.rl.lagrangian import LagrangeMultiplier


def test_log_rule_is_safe_rlhf_ascent_on_log_lambda() -> None:
    m = LagrangeMultiplier(cost_limit=0.5, lambda_init=2.0, lambda_lr=0.1)
    m.update(1.5)  # violated by 1.0: log λ += 0.1 · λ · 1.0
    assert m.value == pytest.approx(math.exp(math.log(2.0) + 0.1 * 2.0 * 1.0))
    before = m.value
    m.update(0.0)  # satisfied: λ shrinks
    assert m.value < before
    assert m.history == pytest.approx([2.0, math.exp(math.log(2.0) + 0.2), m.value])


def test_cap_delay_and_projected_rule() -> None:
    capped = LagrangeMultiplier(cost_limit=0.0, lambda_init=1.0, lambda_lr=10.0, lambda_max=3.0)
    for _ in range(5):
        capped.update(5.0)
    assert capped.value == pytest.approx(3.0)
    delayed = LagrangeMultiplier(cost_limit=0.0, lambda_init=1.0, lambda_lr=1.0, update_delay=2)
    delayed.update(1.0)
    delayed.update(1.0)
    assert delayed.value == 1.0
    delayed.update(1.0)
    assert delayed.value > 1.0
    projected = LagrangeMultiplier(cost_limit=1.0, lambda_init=0.2, lambda_lr=0.5, rule="projected")
    projected.update(0.0)
    assert projected.value == 0.0  # clamped at 0, unlike exp(log λ)
    projected.update(2.0)
    assert projected.value == pytest.approx(0.5)
    with pytest.raises(ValueError):
        LagrangeMultiplier(cost_limit=0.0, lambda_init=0.0)


def test_an_unbounded_lambda_does_not_overflow() -> None:
    m = LagrangeMultiplier(cost_limit=0.0, lambda_init=1.0, lambda_lr=5.0)
    for _ in range(50):
        m.update(10.0)
    assert math.isfinite(m.value)
