"""Advantages and the rollout batch every policy update reads.

A rollout is ``N`` episodes of at most ``T`` actions (tokens for a language
policy, one arm pull for a bandit, grid moves for a CMDP), right-padded, with a
``mask`` of real actions. Each *objective* (a reward to maximise or a cost to
keep low) has its own per-step signal, value estimate and GAE advantage, so
the multi-objective combiners in :mod:`training.rl.combiners` can mix them at
the advantage level (weighted sum, PPO-Lagrangian) or the gradient level
(GAPO), or use them in separate steps (CUP).

Advantages are stored raw, on the signal's own scale: CUP's cost surrogate and
the Lagrangian's ``J_c`` need that scale; normalisation happens in the update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["reward", "cost"]


def masked_mean(x: Any, mask: Any) -> Any:
    """Mean of ``x`` over positions where ``mask`` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def normalize(x: Any, mask: Any, how: Literal["none", "center", "whiten"]) -> Any:
    """``x`` centred (and scaled to unit variance for ``whiten``) over the masked positions; padding stays 0."""
    if how == "none":
        return x
    mean = masked_mean(x, mask)
    out = x - mean
    if how == "whiten":
        var = masked_mean(out**2, mask)
        out = out / (var.sqrt() + 1e-8)
    return out * mask


def gae(rewards: Any, values: Any, mask: Any, *, gamma: float = 1.0, lam: float = 0.95) -> tuple[Any, Any]:
    """Generalised advantage estimation (Schulman et al., ICLR 2016) on right-padded ``[N, T]`` tensors.

    ``δ_t = r_t + γ V(s_{t+1}) - V(s_t)`` with ``V = 0`` past an episode's last
    real step, ``A_t = δ_t + γλ A_{t+1}``. Returns ``(advantages, returns)`` with
    ``returns = advantages + values`` (the value targets); both 0 on padding.
    """
    import torch

    n, t_max = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(t_max)):
        next_mask = mask[:, t + 1] if t + 1 < t_max else torch.zeros_like(last)
        next_value = values[:, t + 1] * next_mask if t + 1 < t_max else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * next_mask
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


@dataclass
class RolloutBatch:
    """``N`` episodes as the PPO update needs them; every tensor is ``[N, T]`` unless noted.

    ``old_logp``: log-probabilities of the taken actions under the policy that
    sampled them; ``advantages`` / ``returns`` / ``old_values``: per objective
    name; ``totals``: per objective, each episode's summed signal ``[N]`` (its
    reward or cost, KL shaping excluded), the sample estimate of ``J``;
    ``kinds``: whether each objective is a reward or a cost.
    """

    old_logp: Any
    mask: Any
    advantages: dict[str, Any]
    returns: dict[str, Any]
    old_values: dict[str, Any]
    totals: dict[str, Any]
    kinds: dict[str, Kind]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.old_logp.shape[0])

    def objective_mean(self, name: str) -> float:
        """The sample estimate of ``J`` for one objective: the mean episode total."""
        return float(self.totals[name].float().mean())

    def select(self, index: Any) -> RolloutBatch:
        """The episodes at ``index`` (a 1-D index tensor)."""

        def pick(d: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v[index] for k, v in d.items()}

        return RolloutBatch(
            old_logp=self.old_logp[index],
            mask=self.mask[index],
            advantages=pick(self.advantages),
            returns=pick(self.returns),
            old_values=pick(self.old_values),
            totals=pick(self.totals),
            kinds=dict(self.kinds),
            extras=pick(self.extras),
        )
