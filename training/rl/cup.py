"""CUP (Yang et al., "Constrained Update Projection", NeurIPS 2022) as a multi-objective PPO update rule.

CUP runs a policy-improvement phase on the reward advantage alone (giving
``π_half``), then a projection phase that minimises ``KL(π_half ‖ π_θ) + ν · Ĉ(θ)`` where
``Ĉ(θ) = J_c(π_old) + E_{π_old}[Σ_t ρ_t A_c,t]`` is the first-order cost
surrogate (``ρ = π_θ / π_old``, undiscounted episodic sums) and ν is CUP's
multiplier (projected ascent on ``J_c - d``, at least ``nu_floor`` while
projecting). When ``Ĉ(π_half) ≤ d`` already, π_half is its own projection and
the phase is skipped; otherwise, to *end* within the limit in finitely many
steps, it keeps going with ν doubled while ``Ĉ > d`` (a penalty
continuation, up to ``projection_max_extra_epochs`` extra epochs).
CUP's ``√KL`` trust-region term in the bound is left out, as OmniSafe does.

``KL(π_half ‖ π_θ)`` is estimated at the sampled actions with importance weights,
``E_{a∼π_old}[(π_half/π_old)(log π_half - log π_θ)]``, so the same code serves a
bandit and a 50k-token vocabulary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from training.rl.advantages import Kind, RolloutBatch, masked_mean, normalize
from training.rl.lagrangian import LagrangeMultiplier
from training.rl.ppo_update import Combiner, Evaluate, PPOHyper, minibatches, optimizer_step, ppo_epochs

logger = logging.getLogger(__name__)


class CUP(Combiner):
    """CUP: improve on the reward advantage, then project back towards the cost limit (see the module docstring)."""

    name = "cup"

    def __init__(
        self,
        kinds: dict[str, Kind],
        *,
        cost_limit: float,
        nu_init: float = 0.0,
        nu_lr: float = 0.5,
        nu_floor: float = 0.1,
        nu_max: float = 1e4,
        projection_epochs: int = 4,
        projection_max_extra_epochs: int = 8,
        projection_lr: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(kinds, seed=seed)
        if len(self.costs) != 1 or not self.rewards:
            raise ValueError("cup needs at least one reward and exactly one cost objective")
        self.cost = self.costs[0]
        self.cost_limit = cost_limit
        self.nu = LagrangeMultiplier(cost_limit=cost_limit, lambda_init=nu_init, lambda_lr=nu_lr, rule="projected")
        self.nu_floor = nu_floor
        self.nu_max = nu_max
        self.projection_epochs = projection_epochs
        self.projection_max_extra_epochs = projection_max_extra_epochs
        self.projection_lr = projection_lr

    def state(self) -> dict[str, float]:
        return {f"nu/{self.cost}": self.nu.value}

    def cost_surrogate(self, logp: Any, batch: RolloutBatch, j_cost: float, center: float) -> Any:
        """``Ĉ(θ) = J_c(π_old) + mean_episodes Σ_t ρ_t (A_c,t - center)`` on the raw cost scale.

        ``center`` is the rollout's mean cost advantage, so that ``Ĉ(θ_old) = J_c(π_old)``
        exactly even when the value head is off.
        """
        import torch

        ratio = torch.exp(logp - batch.old_logp)
        per_episode = (ratio * (batch.advantages[self.cost] - center) * batch.mask).sum(dim=1)
        return j_cost + per_episode.mean()

    def _logp_all(self, batch: RolloutBatch, evaluate: Evaluate, size: int) -> Any:
        import torch

        with torch.no_grad():
            parts = [evaluate(idx)[0].detach() for idx in torch.arange(batch.size).split(max(1, size))]
        return torch.cat(parts)

    def update(
        self, batch: RolloutBatch, evaluate: Evaluate, params: Sequence[Any], optimizer: Any, hyper: PPOHyper
    ) -> dict[str, float]:
        import torch

        j_cost = batch.objective_mean(self.cost)
        self.nu.update(j_cost)
        # 1) policy improvement on the reward advantage alone
        adv = {k: normalize(batch.advantages[k], batch.mask, hyper.normalize_advantages) for k in self.rewards}
        stats = ppo_epochs(batch, sum(adv.values()), evaluate, params, optimizer, hyper, self.generator)
        half_logp = self._logp_all(batch, evaluate, hyper.minibatch_size)
        center = float(masked_mean(batch.advantages[self.cost], batch.mask))
        surrogate_half = float(self.cost_surrogate(half_logp, batch, j_cost, center))
        # 2) projection: min KL(π_half ‖ π) + ν·Ĉ, ν doubled while Ĉ stays above the limit. A fresh Adam:
        # the projection is its own problem, and the improvement step's momentum would push against it.
        lr = self.projection_lr if self.projection_lr is not None else optimizer.param_groups[0]["lr"]
        projector = torch.optim.Adam([p for p in params if p.requires_grad], lr=lr)
        nu = min(max(self.nu.value, self.nu_floor), self.nu_max)
        kls: list[float] = []
        epochs = 0
        surrogate = surrogate_half
        # π_half already within the limit is its own projection (KL 0): nothing to do.
        max_epochs = (
            0 if surrogate_half <= self.cost_limit else self.projection_epochs + self.projection_max_extra_epochs
        )
        while epochs < max_epochs:
            for idx in minibatches(batch.size, hyper.minibatch_size, self.generator):
                mb = batch.select(idx)
                logp, _ = evaluate(idx)
                half = half_logp[idx]
                kl = masked_mean(torch.exp(half - mb.old_logp) * (half - logp), mb.mask)
                loss = kl + nu * self.cost_surrogate(logp, mb, j_cost, center)
                projector.zero_grad()
                loss.backward()
                optimizer_step(projector, params, hyper.max_grad_norm)
                kls.append(float(kl.detach()))
            epochs += 1
            logp_all = self._logp_all(batch, evaluate, hyper.minibatch_size)
            surrogate = float(self.cost_surrogate(logp_all, batch, j_cost, center))
            if epochs >= self.projection_epochs:
                if surrogate <= self.cost_limit:
                    break
                nu = min(2.0 * nu, self.nu_max)
        if surrogate > self.cost_limit:
            logger.warning("cup: projection ended with cost surrogate %.4f > limit %.4f", surrogate, self.cost_limit)
        stats.update(
            self.state(),
            cost_surrogate_half=surrogate_half,
            cost_surrogate_after=surrogate,
            projection_kl=kls[-1] if kls else math.nan,
            projection_epochs=float(epochs),
            projection_nu=nu,
        )
        return stats
