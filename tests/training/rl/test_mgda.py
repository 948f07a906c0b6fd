"""GAPO / P-GAPO directions on hand-made gradients (training/rl/mgda.py)."""

from __future__ import annotations

import math

import pytest
import torch

from training.rl.mgda import gapo_direction, min_norm_weights, project_to_simplex, two_point_weight

CASES = {
    "conflicting, unequal scale": [torch.tensor([10.0, 0.0, 0.0]), torch.tensor([-0.3, 0.4, 0.0])],
    "nearly opposed": [torch.tensor([1.0, 0.1]), torch.tensor([-1.0, 0.2])],
    "three objectives": [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-0.5, 1.0, 0.0]), torch.tensor([0.0, -0.2, 3.0])],
    "four, one tiny": [
        torch.tensor([1.0, 1.0, 0.0, 0.0]),
        torch.tensor([0.0, -1.0, 1.0, 0.0]),
        torch.tensor([0.0, 0.0, -1.0, 1.0]),
        torch.tensor([1e-3, 0.0, 0.0, 1e-3]),
    ],
}


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("case", list(CASES))
def test_combined_direction_never_opposes_an_objective(case: str, p: float) -> None:
    grads = CASES[case]
    combo = gapo_direction(grads, p=p)
    assert float(combo.direction.norm()) > 1e-6
    for g in grads:
        assert float(combo.direction @ g) >= -1e-9
    assert math.isclose(sum(combo.weights), 1.0, abs_tol=1e-9)


def test_two_objectives_match_the_closed_form() -> None:
    g1, g2 = torch.tensor([3.0, 1.0, 0.0]), torch.tensor([-1.0, 2.0, 0.5])
    u1, u2 = g1 / g1.norm(), g2 / g2.norm()  # p = 1: unit vectors
    alpha = min(1.0, max(0.0, float((u2 - u1) @ u2) / float((u1 - u2) @ (u1 - u2))))
    expected = alpha * u1 + (1 - alpha) * u2
    combo = gapo_direction([g1, g2], p=1.0)
    assert torch.allclose(combo.direction.double(), expected.double(), atol=1e-6)
    assert combo.weights == pytest.approx([alpha, 1 - alpha])
    # the general projected solver agrees with the closed form (g2 listed twice spans the same hull)
    weights = min_norm_weights(torch.stack([u1, u2, u2]))
    point = weights[0] * u1.double() + (weights[1] + weights[2]) * u2.double()
    assert torch.allclose(point, expected.double(), atol=1e-5)


def test_min_norm_point_of_the_standard_basis_is_its_centroid() -> None:
    weights = min_norm_weights(torch.eye(3))
    assert torch.allclose(weights, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-6)


def test_min_norm_weights_satisfy_the_optimality_conditions() -> None:
    gen = torch.Generator().manual_seed(0)
    vectors = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    alpha = min_norm_weights(vectors)
    d = alpha @ vectors
    gains = vectors @ d
    sq = float(d @ d)
    assert float(alpha.min()) >= 0 and math.isclose(float(alpha.sum()), 1.0, abs_tol=1e-9)
    assert float(gains.min()) >= sq - 1e-6  # ⟨d, v_i⟩ ≥ ‖d‖² for every i ...
    active = alpha > 1e-6
    assert torch.allclose(gains[active], torch.full_like(gains[active], sq), atol=1e-5)  # ... with equality if used


def test_preferences_move_the_solution_toward_the_preferred_objective() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-0.6, 0.8])  # 127° apart: a real conflict
    plain = gapo_direction([g1, g2], p=1.0)
    first = gapo_direction([g1, g2], p=1.0, preferences=[0.8, 0.2])
    second = gapo_direction([g1, g2], p=1.0, preferences=[0.2, 0.8])

    def cos(d: torch.Tensor, g: torch.Tensor) -> float:
        return float(d @ g / (d.norm() * g.norm()))

    assert cos(first.direction, g1) > cos(plain.direction, g1) > cos(second.direction, g1)
    assert cos(second.direction, g2) > cos(plain.direction, g2) > cos(first.direction, g2)
    # the first-order gains on the (unit) objectives are in the ratio of the preferences
    gain1, gain2 = float(first.direction @ g1), float(first.direction @ g2)
    assert gain1 / gain2 == pytest.approx(0.8 / 0.2, rel=1e-5)
    for combo in (first, second):
        assert float(combo.direction @ g1) >= 0 and float(combo.direction @ g2) >= 0


def test_an_objective_without_signal_is_left_out() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.zeros(2)
    combo = gapo_direction([g1, g2])
    assert combo.weights == [1.0, 0.0]
    assert torch.allclose(combo.direction, g1)


def test_helpers() -> None:
    assert two_point_weight(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(0.5)
    assert two_point_weight(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])) == 1.0  # g1 is already the min norm
    projected = project_to_simplex(torch.tensor([0.9, 0.8, -1.0], dtype=torch.float64))
    assert torch.allclose(projected, torch.tensor([0.55, 0.45, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive preferences"):
        gapo_direction([torch.ones(2), torch.ones(2)], preferences=[1.0, 0.0])
