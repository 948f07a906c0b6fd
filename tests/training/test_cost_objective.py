"""The Safe RLHF cost loss and its items (training/cost_objective.py), on numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from training.cost_objective import build_items, cost_loss
from training.data.records import PreferencePair, SafetyLabel


def _nll(x: float) -> float:
    return -math.log(1 / (1 + math.exp(-x)))


def _loss(costs: list[float], signs: list[int], pairs: list[tuple[int, int]]) -> float:
    import torch

    return float(
        cost_loss(torch.tensor(costs), torch.tensor(signs), torch.tensor(pairs, dtype=torch.long).reshape(-1, 2))
    )


def test_pair_loss_is_ranking_plus_both_sign_terms() -> None:
    # unsafer costs 2.0 (unsafe, s=+1), safer costs -1.0 (safe, s=-1)
    assert _loss([2.0, -1.0], [1, -1], [(0, 1)]) == pytest.approx(_nll(3.0) + _nll(2.0) + _nll(1.0))


def test_unknown_labels_leave_only_the_ranking_term() -> None:
    assert _loss([0.5, 1.0], [0, 0], [(0, 1)]) == pytest.approx(_nll(-0.5))


def test_singles_and_pairs_average_per_item() -> None:
    pair = _nll(1.0) + _nll(0.5) + _nll(0.5)
    single = _nll(-0.3)  # a safe answer (s=-1) with cost 0.3: on the wrong side of 0
    assert _loss([0.5, -0.5, 0.3], [1, -1, -1], [(0, 1)]) == pytest.approx((pair + single) / 2)


def test_sign_term_pushes_unsafe_above_zero_and_safe_below() -> None:
    assert _loss([2.0], [1], []) < _loss([0.0], [1], []) < _loss([-2.0], [1], [])
    assert _loss([-2.0], [-1], []) < _loss([2.0], [-1], [])
    assert _loss([3.0, 1.0], [0, 0], [(0, 1)]) < _loss([1.0, 3.0], [0, 0], [(0, 1)])  # unsafer must cost more


def test_pairs_are_ordered_unsafer_first_and_unranked_pairs_skipped() -> None:
    pairs = [
        PreferencePair(source="t", prompt="q", chosen="safe", rejected="bad", safer="chosen", chosen_is_safe=True),
        PreferencePair(source="t", prompt="q", chosen="bad", rejected="safe", safer="rejected", chosen_is_safe=False),
        PreferencePair(source="t", prompt="q", chosen="a", rejected="b"),
    ]
    labels = [SafetyLabel(source="t", question="q", answer="x", is_safe=False)]
    items = build_items(labels, pairs)
    assert [(i.answers, i.signs) for i in items] == [
        (["x"], [1]),
        (["bad", "safe"], [0, -1]),
        (["bad", "safe"], [1, 0]),
    ]
