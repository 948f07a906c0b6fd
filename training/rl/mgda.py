"""Min-norm gradient combination (MGDA) and GAPO's rescaled version of it.

MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018) combines the gradients
``g_1..g_m`` of ``m`` objectives to *maximise* by the minimum-norm point of
their convex hull::

    α* = argmin_{α ∈ Δ_m} ‖Σ_i α_i g_i‖²,    d = Σ_i α*_i g_i

Its optimality condition gives ``⟨d, g_i⟩ ≥ ‖d‖² ≥ 0`` for every ``i``: a small
step along ``d`` improves no objective's first-order estimate at the expense of
another, and ``d = 0`` means a Pareto-stationary point. For two objectives the
point has a closed form (:func:`two_point_weight`); for more we solve the small
``m × m`` quadratic programme on the Gram matrix by projected gradient descent
onto the simplex (:func:`min_norm_weights`).

GAPO (Li et al., "Gradient-Adaptive Policy Optimization", ACL 2025) notes that
plain MGDA favours objectives with *small* gradients and rescales each gradient
by a power of its norm first, ``ĝ_i = g_i / ‖g_i‖^p`` (``p = 0`` is MGDA,
``p = 1`` unit vectors). P-GAPO adds user preferences ``w_i > 0``. We divide by
them, ``g̃_i = ĝ_i / w_i``: at an interior min-norm point ``⟨d, g̃_i⟩ = ‖d‖²``
for all ``i``, so the first-order gain on the rescaled objective,
``⟨d, ĝ_i⟩ = w_i · ‖d‖²``, is proportional to its preference (multiplying by
``w_i`` would do the opposite). This is our reading of P-GAPO; the
preference-weighted gains it yields are what the tests check.

Objectives whose gradient norm is (numerically) zero carry no signal this
batch (e.g. every sample had the same cost) and are left out of the hull, so
they cannot freeze the update at ``d = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def two_point_weight(g1: Any, g2: Any) -> float:
    """The closed-form MGDA weight ``α`` on ``g1`` (``1 - α`` on ``g2``) for two vectors.

    ``argmin_{α∈[0,1]} ‖α g1 + (1-α) g2‖² = clip(⟨g2 - g1, g2⟩ / ‖g1 - g2‖², 0, 1)``
    (Sener & Koltun 2018, Algorithm 1).
    """
    diff = g1 - g2
    denom = float((diff * diff).sum())
    if denom <= 0.0:
        return 0.5
    alpha = float(((g2 - g1) * g2).sum()) / denom
    return min(1.0, max(0.0, alpha))


def project_to_simplex(v: Any) -> Any:
    """Euclidean projection of a 1-D tensor onto the probability simplex (Duchi et al., ICML 2008)."""
    import torch

    n = v.numel()
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    ind = torch.arange(1, n + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - css / ind > 0).max())
    theta = css[rho] / (rho + 1)
    return torch.clamp(v - theta, min=0.0)


def min_norm_weights(vectors: Any, *, max_iter: int = 500, tol: float = 1e-10) -> Any:
    """Weights ``α ∈ Δ_m`` of the min-norm point of the convex hull of the rows of ``vectors`` (``m × n``).

    Two rows use :func:`two_point_weight`; more rows run projected gradient
    descent on ``αᵀ G α`` with ``G = V Vᵀ`` (step ``1 / (2 λ_max(G))``), in float64.
    """
    import torch

    v = vectors.detach().to(torch.float64)
    m = v.shape[0]
    if m == 1:
        return torch.ones(1, dtype=torch.float64)
    if m == 2:
        a = two_point_weight(v[0], v[1])
        return torch.tensor([a, 1.0 - a], dtype=torch.float64)
    gram = v @ v.T
    lipschitz = 2.0 * float(torch.linalg.eigvalsh(gram).max())
    if lipschitz <= 0.0:
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    alpha = torch.full((m,), 1.0 / m, dtype=torch.float64)
    for _ in range(max_iter):
        step = project_to_simplex(alpha - (2.0 * gram @ alpha) / lipschitz)
        if float((step - alpha).abs().max()) < tol:
            alpha = step
            break
        alpha = step
    return alpha


@dataclass
class Combination:
    """A combined ascent direction and how it was made (``weights`` are over all objectives, 0 for dropped ones)."""

    direction: Any
    weights: list[float]
    norms: list[float]


def gapo_direction(
    grads: Sequence[Any],
    *,
    p: float = 1.0,
    preferences: Sequence[float] | None = None,
    eps: float = 1e-12,
) -> Combination:
    """GAPO / P-GAPO: rescale each ascent gradient by ``1 / (w_i ‖g_i‖^p)``, then take the MGDA min-norm point.

    ``grads`` are flat tensors of equal shape, one per objective, each the
    gradient of a quantity to *maximise*. ``preferences=None`` is GAPO (all
    ``w_i = 1``). The returned direction is an ascent direction for every
    objective: ``⟨direction, g_i⟩ ≥ 0``.
    """
    import torch

    if not grads:
        raise ValueError("gapo_direction needs at least one gradient")
    if preferences is not None:
        if len(preferences) != len(grads) or any(w <= 0 for w in preferences):
            raise ValueError(f"need {len(grads)} positive preferences, got {list(preferences)}")
    prefs = list(preferences) if preferences is not None else [1.0] * len(grads)
    norms = [float(torch.linalg.vector_norm(g.detach().to(torch.float64))) for g in grads]
    live = [i for i, n in enumerate(norms) if n > eps]
    weights = [0.0] * len(grads)
    if not live:
        return Combination(torch.zeros_like(grads[0]), weights, norms)
    scaled = torch.stack([grads[i].detach().to(torch.float64) / (prefs[i] * norms[i] ** p) for i in live])
    alpha = min_norm_weights(scaled)
    direction = (alpha[:, None] * scaled).sum(0)
    for k, i in enumerate(live):
        weights[i] = float(alpha[k])
    return Combination(direction.to(grads[0].dtype), weights, norms)
