"""What every multi-objective PPO update rule is built from: its interface, PPO's losses and the epoch loop.

A rule (:class:`Combiner`) turns one :class:`~training.rl.advantages.RolloutBatch`
into a policy step. It only needs ``evaluate(index) -> (logp, values)`` for a
set of episodes: the log-probs of their taken actions under the current
parameters and one value tensor per objective. The toy problems and the
language-model loop both provide that. The pieces here are PPO's (Schulman et
al. 2017): the clipped surrogate, the clipped value loss, shuffled minibatches
and :func:`ppo_epochs`, plain PPO on one advantage; the rules in
:mod:`training.rl.combiners` and :mod:`training.rl.cup` decide what they clip
and how objectives combine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from training.rl.advantages import Kind, RolloutBatch, masked_mean

Evaluate = Callable[[Any], tuple[Any, dict[str, Any]]]
"""``evaluate(index) -> (logp [n, T], {objective: values [n, T]})`` for the episodes at ``index``, with grad."""


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


def minibatches(n: int, size: int, generator: Any) -> list[Any]:
    import torch

    order = torch.randperm(n, generator=generator)
    return [order[i : i + size] for i in range(0, n, max(1, size))]


def optimizer_step(optimizer: Any, params: Sequence[Any], max_grad_norm: float | None) -> float:
    import torch

    norm = float("nan")
    if max_grad_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm))
    optimizer.step()
    return norm


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


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
        for idx in minibatches(batch.size, hyper.minibatch_size, generator):
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
            optimizer_step(optimizer, params, hyper.max_grad_norm)
            pg_losses.append(float(pg.detach()))
            clip_fracs.append(float(clip_frac))
    return {"policy_loss": mean(pg_losses), "value_loss": mean(v_losses), "clip_frac": mean(clip_fracs)}
