"""Multi-objective PPO updates: how several rewards and costs become one policy step.

Every rule runs PPO's clipped surrogate (Schulman et al. 2017) over epochs of
minibatches of a :class:`~training.rl.advantages.RolloutBatch`; they differ in
what they clip and how they combine:

- :class:`WeightedSum`: one advantage ``Σ_i w_i s_i A_i`` (``s = +1`` for a
  reward, ``-1`` for a cost). With a cost weight of 0 it is unconstrained PPO.
- :class:`Lagrangian` (PPO-Lagrangian, Safe RLHF, Dai et al. ICLR 2024, eq. 11):
  ``A = (A_r - λ A_c) / (1 + λ)``, λ from :class:`~training.rl.lagrangian.LagrangeMultiplier`,
  updated once per rollout from the batch's mean episode cost *before* the
  policy step, as Safe RLHF's ``rl_step`` does. Several costs get a λ each:
  ``(Σ A_r - Σ_j λ_j A_cj) / (1 + Σ_j λ_j)``.
- :class:`GAPO` / P-GAPO (Li et al., ACL 2025): one clipped surrogate per
  objective, one gradient each, combined by :func:`~training.rl.mgda.gapo_direction`
  (norm rescaling, min-norm point of the hull, optional preferences).
- :class:`~training.rl.cup.CUP` (Yang et al., "Constrained Update Projection",
  NeurIPS 2022): improve on the reward, then project back within the cost limit.

The interface and the PPO pieces every rule shares are in :mod:`training.rl.ppo_update`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from training.rl.advantages import Kind, RolloutBatch, normalize
from training.rl.cup import CUP
from training.rl.lagrangian import LagrangeMultiplier
from training.rl.mgda import gapo_direction
from training.rl.ppo_update import (
    Combiner,
    Evaluate,
    PPOHyper,
    clipped_surrogate,
    mean,
    minibatches,
    optimizer_step,
    ppo_epochs,
    value_loss,
)

CombinerName = Literal["weighted", "lagrangian", "gapo", "pgapo", "cup"]


@dataclass
class MultiObjectiveConfig:
    """How objectives are combined; the PPO and toy configs inherit these fields (YAML keys and CLI flags)."""

    combiner: CombinerName = field(
        default="lagrangian", metadata={"help": "weighted | lagrangian | gapo | pgapo | cup."}
    )
    weights: list[float] | None = field(
        default=None, metadata={"help": "weighted: one weight per objective (cost signs are applied). None: all 1."}
    )
    cost_limit: float = field(default=0.0, metadata={"help": "d in J_c <= d (lagrangian, cup)."})
    lambda_init: float = field(default=1.0, metadata={"help": "lagrangian: initial λ (> 0)."})
    lambda_lr: float = field(default=0.1, metadata={"help": "lagrangian: learning rate of log λ."})
    lambda_max: float | None = field(default=None, metadata={"help": "lagrangian: cap on λ. None: no cap."})
    lambda_update_delay: int = field(default=0, metadata={"help": "lagrangian: rollouts before λ starts moving."})
    gapo_p: float = field(default=1.0, metadata={"help": "gapo/pgapo: gradients are divided by ‖g‖^p."})
    preferences: list[float] | None = field(
        default=None, metadata={"help": "pgapo: one positive preference weight per objective."}
    )
    nu_init: float = field(default=0.0, metadata={"help": "cup: initial ν (>= 0)."})
    nu_lr: float = field(default=0.5, metadata={"help": "cup: ν learning rate (projected ascent on J_c - d)."})
    nu_floor: float = field(default=0.1, metadata={"help": "cup: smallest ν used while projecting."})
    nu_max: float = field(default=1e4, metadata={"help": "cup: cap on ν in the projection continuation."})
    projection_epochs: int = field(default=4, metadata={"help": "cup: projection epochs over the rollout."})
    projection_max_extra_epochs: int = field(
        default=8, metadata={"help": "cup: extra projection epochs (ν doubled each) while Ĉ > d."}
    )
    projection_lr: float | None = field(
        default=None, metadata={"help": "cup: learning rate of the projection's own Adam. None: the policy's."}
    )


class AdvantageCombiner(Combiner):
    """A rule that mixes normalised advantages into one and runs plain PPO on it."""

    def prepare(self, batch: RolloutBatch) -> dict[str, float]:
        """Called once per rollout before the epochs (dual updates); returns stats."""
        return {}

    def combine(self, advantages: dict[str, Any]) -> Any:
        raise NotImplementedError

    def update(
        self, batch: RolloutBatch, evaluate: Evaluate, params: Sequence[Any], optimizer: Any, hyper: PPOHyper
    ) -> dict[str, float]:
        stats = self.prepare(batch)
        adv = {k: normalize(batch.advantages[k], batch.mask, hyper.normalize_advantages) for k in self.kinds}
        combined = self.combine(adv)
        stats.update(ppo_epochs(batch, combined, evaluate, params, optimizer, hyper, self.generator))
        return stats


class WeightedSum(AdvantageCombiner):
    """``A = Σ_i w_i s_i A_i``; a cost weight of 0 gives unconstrained PPO on the rewards."""

    name = "weighted"

    def __init__(self, kinds: dict[str, Kind], weights: Sequence[float] | None = None, *, seed: int = 0) -> None:
        super().__init__(kinds, seed=seed)
        weights = list(weights) if weights is not None else [1.0] * len(kinds)
        if len(weights) != len(kinds):
            raise ValueError(f"{len(kinds)} objectives but {len(weights)} weights")
        self.weights = dict(zip(self.kinds, weights, strict=True))

    def combine(self, advantages: dict[str, Any]) -> Any:
        return sum(self.weights[k] * self.sign(k) * advantages[k] for k in self.kinds)


class Lagrangian(AdvantageCombiner):
    """PPO-Lagrangian: ``A = (Σ A_r - Σ_j λ_j A_cj) / (1 + Σ_j λ_j)`` with λ_j updated from each rollout's mean cost."""

    name = "lagrangian"

    def __init__(
        self,
        kinds: dict[str, Kind],
        *,
        cost_limit: float,
        lambda_init: float = 1.0,
        lambda_lr: float = 0.1,
        lambda_max: float | None = None,
        update_delay: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(kinds, seed=seed)
        if not self.costs or not self.rewards:
            raise ValueError("lagrangian needs at least one reward and one cost objective")
        self.multipliers = {
            c: LagrangeMultiplier(
                cost_limit=cost_limit,
                lambda_init=lambda_init,
                lambda_lr=lambda_lr,
                lambda_max=lambda_max,
                update_delay=update_delay,
            )
            for c in self.costs
        }

    def state(self) -> dict[str, float]:
        return {f"lambda/{c}": m.value for c, m in self.multipliers.items()}

    def prepare(self, batch: RolloutBatch) -> dict[str, float]:
        for c, m in self.multipliers.items():
            m.update(batch.objective_mean(c))
        return self.state()

    def combine(self, advantages: dict[str, Any]) -> Any:
        lams = {c: m.value for c, m in self.multipliers.items()}
        numerator = sum(advantages[r] for r in self.rewards) - sum(lams[c] * advantages[c] for c in self.costs)
        return numerator / (1.0 + sum(lams.values()))


class GAPO(Combiner):
    """GAPO / P-GAPO: per-objective clipped-surrogate gradients, norm-rescaled, combined at the MGDA min-norm point."""

    name = "gapo"

    def __init__(
        self,
        kinds: dict[str, Kind],
        *,
        p: float = 1.0,
        preferences: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(kinds, seed=seed)
        self.p = p
        self.preferences = list(preferences) if preferences is not None else None
        self.last_weights: list[float] = []

    def state(self) -> dict[str, float]:
        return {f"mgda_weight/{k}": w for k, w in zip(self.kinds, self.last_weights, strict=False)}

    def update(
        self, batch: RolloutBatch, evaluate: Evaluate, params: Sequence[Any], optimizer: Any, hyper: PPOHyper
    ) -> dict[str, float]:
        import torch

        params = [p for p in params if p.requires_grad]
        adv = {k: normalize(batch.advantages[k], batch.mask, hyper.normalize_advantages) for k in self.kinds}
        weights: list[list[float]] = []
        v_losses: list[float] = []
        for _ in range(hyper.epochs):
            for idx in minibatches(batch.size, hyper.minibatch_size, self.generator):
                mb = batch.select(idx)
                logp, values = evaluate(idx)
                ascents = []
                for k in self.kinds:
                    loss_k, _ = clipped_surrogate(
                        logp, mb.old_logp, self.sign(k) * adv[k][idx], mb.mask, hyper.clip_range
                    )
                    grads = torch.autograd.grad(loss_k, params, retain_graph=True, allow_unused=True)
                    ascents.append(
                        -torch.cat(
                            [
                                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                                for g, p in zip(grads, params, strict=True)
                            ]
                        )
                    )
                combo = gapo_direction(ascents, p=self.p, preferences=self.preferences)
                weights.append(combo.weights)
                optimizer.zero_grad()
                if values:
                    vl = hyper.vf_coef * value_loss(values, mb, hyper.value_clip)
                    vl.backward()
                    v_losses.append(float(vl.detach()))
                offset = 0
                for prm in params:
                    n = prm.numel()
                    descent = -combo.direction[offset : offset + n].view_as(prm).to(prm.dtype)
                    prm.grad = descent if prm.grad is None else prm.grad + descent
                    offset += n
                optimizer_step(optimizer, params, hyper.max_grad_norm)
        self.last_weights = [mean([w[i] for w in weights]) for i in range(len(self.kinds))]
        return {**self.state(), "value_loss": mean(v_losses)}


def build_combiner(config: MultiObjectiveConfig, kinds: dict[str, Kind], *, seed: int = 0) -> Combiner:
    """The rule ``config.combiner`` names, for objectives ``kinds`` (in order)."""
    name = config.combiner
    if name == "weighted":
        return WeightedSum(kinds, config.weights, seed=seed)
    if name == "lagrangian":
        return Lagrangian(
            kinds,
            cost_limit=config.cost_limit,
            lambda_init=config.lambda_init,
            lambda_lr=config.lambda_lr,
            lambda_max=config.lambda_max,
            update_delay=config.lambda_update_delay,
            seed=seed,
        )
    if name in ("gapo", "pgapo"):
        if name == "pgapo" and config.preferences is None:
            raise ValueError("pgapo needs `preferences` (one positive weight per objective)")
        return GAPO(kinds, p=config.gapo_p, preferences=config.preferences if name == "pgapo" else None, seed=seed)
    if name == "cup":
        return CUP(
            kinds,
            cost_limit=config.cost_limit,
            nu_init=config.nu_init,
            nu_lr=config.nu_lr,
            nu_floor=config.nu_floor,
            nu_max=config.nu_max,
            projection_epochs=config.projection_epochs,
            projection_max_extra_epochs=config.projection_max_extra_epochs,
            projection_lr=config.projection_lr,
            seed=seed,
        )
    raise ValueError(f"unknown combiner {name!r}; known: weighted, lagrangian, gapo, pgapo, cup")
