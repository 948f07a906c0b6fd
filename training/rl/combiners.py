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
- :class:`CUP` (Yang et al., "Constrained Update Projection", NeurIPS 2022):
  a policy-improvement phase on the reward advantage alone (giving ``π_half``),
  then a projection phase that minimises ``KL(π_half ‖ π_θ) + ν · Ĉ(θ)`` where
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

A rule only needs ``evaluate(index) -> (logp, values)`` for a set of episodes:
the log-probs of their taken actions under the current parameters and one
value tensor per objective. The toy problems and the language-model loop both
provide that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from training.rl.advantages import Kind, RolloutBatch, masked_mean, normalize
from training.rl.lagrangian import LagrangeMultiplier
from training.rl.mgda import gapo_direction

logger = logging.getLogger(__name__)

Evaluate = Callable[[Any], tuple[Any, dict[str, Any]]]
"""``evaluate(index) -> (logp [n, T], {objective: values [n, T]})`` for the episodes at ``index``, with grad."""

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


@dataclass
class PPOHyper:
    """The PPO optimisation knobs every rule shares."""

    epochs: int = 4
    minibatch_size: int = 64
    clip_range: float = 0.2
    value_clip: float | None = 0.2
    vf_coef: float = 0.5
    max_grad_norm: float | None = 1.0
    normalize_advantages: Literal["none", "center", "whiten"] = "whiten"


# --------------------------------------------------------------------------- losses


def clipped_surrogate(logp: Any, old_logp: Any, advantages: Any, mask: Any, clip_range: float) -> tuple[Any, Any]:
    """PPO's clipped objective as a loss to minimise, and the fraction of clipped positions.

    ``L = -E[min(ρ A, clip(ρ, 1-ε, 1+ε) A)]`` with ``ρ = exp(logp - old_logp)``
    (Schulman et al. 2017, eq. 7), averaged over the masked positions.
    """
    import torch

    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    clip_frac = masked_mean(((ratio - 1.0).abs() > clip_range).to(logp.dtype), mask)
    return loss, clip_frac.detach()


def value_loss(values: dict[str, Any], batch: RolloutBatch, value_clip: float | None) -> Any:
    """Sum over objectives of PPO's (optionally clipped) squared value error, ``0.5·max((V-R)², (V_clip-R)²)``."""
    import torch

    total = None
    for name, v in values.items():
        target = batch.returns[name]
        err = (v - target) ** 2
        if value_clip is not None:
            old = batch.old_values[name]
            v_clip = old + torch.clamp(v - old, -value_clip, value_clip)
            err = torch.maximum(err, (v_clip - target) ** 2)
        term = 0.5 * masked_mean(err, batch.mask)
        total = term if total is None else total + term
    return total


def _minibatches(n: int, size: int, generator: Any) -> list[Any]:
    import torch

    order = torch.randperm(n, generator=generator)
    return [order[i : i + size] for i in range(0, n, max(1, size))]


def _step(optimizer: Any, params: Sequence[Any], max_grad_norm: float | None) -> float:
    import torch

    norm = float("nan")
    if max_grad_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm))
    optimizer.step()
    return norm


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# --------------------------------------------------------------------------- rules


class Combiner:
    """A multi-objective PPO update rule; subclasses say how objectives are mixed."""

    name: ClassVar[str] = "base"

    def __init__(self, kinds: dict[str, Kind], *, seed: int = 0) -> None:
        import torch

        if not kinds:
            raise ValueError("a combiner needs at least one objective")
        self.kinds = dict(kinds)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def rewards(self) -> list[str]:
        return [k for k, v in self.kinds.items() if v == "reward"]

    @property
    def costs(self) -> list[str]:
        return [k for k, v in self.kinds.items() if v == "cost"]

    def sign(self, name: str) -> float:
        return 1.0 if self.kinds[name] == "reward" else -1.0

    def state(self) -> dict[str, float]:
        """Scalars worth logging between updates (multipliers); none by default."""
        return {}

    def update(
        self, batch: RolloutBatch, evaluate: Evaluate, params: Sequence[Any], optimizer: Any, hyper: PPOHyper
    ) -> dict[str, float]:
        raise NotImplementedError


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


def ppo_epochs(
    batch: RolloutBatch,
    advantage: Any,
    evaluate: Evaluate,
    params: Sequence[Any],
    optimizer: Any,
    hyper: PPOHyper,
    generator: Any,
    *,
    epochs: int | None = None,
) -> dict[str, float]:
    """Plain PPO epochs on one advantage tensor, value heads trained alongside."""
    pg_losses: list[float] = []
    v_losses: list[float] = []
    clip_fracs: list[float] = []
    for _ in range(hyper.epochs if epochs is None else epochs):
        for idx in _minibatches(batch.size, hyper.minibatch_size, generator):
            mb = batch.select(idx)
            logp, values = evaluate(idx)
            pg, clip_frac = clipped_surrogate(logp, mb.old_logp, advantage[idx], mb.mask, hyper.clip_range)
            loss = pg
            if values:
                vl = value_loss(values, mb, hyper.value_clip)
                loss = loss + hyper.vf_coef * vl
                v_losses.append(float(vl.detach()))
            optimizer.zero_grad()
            loss.backward()
            _step(optimizer, params, hyper.max_grad_norm)
            pg_losses.append(float(pg.detach()))
            clip_fracs.append(float(clip_frac))
    return {"policy_loss": _mean(pg_losses), "value_loss": _mean(v_losses), "clip_frac": _mean(clip_fracs)}


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
            for idx in _minibatches(batch.size, hyper.minibatch_size, self.generator):
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
                _step(optimizer, params, hyper.max_grad_norm)
        self.last_weights = [_mean([w[i] for w in weights]) for i in range(len(self.kinds))]
        return {**self.state(), "value_loss": _mean(v_losses)}


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
            for idx in _minibatches(batch.size, hyper.minibatch_size, self.generator):
                mb = batch.select(idx)
                logp, _ = evaluate(idx)
                half = half_logp[idx]
                kl = masked_mean(torch.exp(half - mb.old_logp) * (half - logp), mb.mask)
                loss = kl + nu * self.cost_surrogate(logp, mb, j_cost, center)
                projector.zero_grad()
                loss.backward()
                _step(projector, params, hyper.max_grad_norm)
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
