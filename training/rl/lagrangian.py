"""The Lagrange multiplier of a cost constraint ``J_c(π) ≤ d``, as Safe RLHF updates it.

Safe RLHF (Dai et al., ICLR 2024, section 3.3) turns "maximise reward subject
to expected cost ≤ d" into the min-max problem ``min_θ max_{λ≥0} -J_r(θ) + λ·(J_c(θ) - d)``
and keeps ``λ = exp(log λ)`` so it stays positive. ``log λ`` moves by gradient
ascent on ``λ·(J_c - d)``; its gradient with respect to ``log λ`` is ``λ·(J_c - d)``, so::

    log λ ← log λ + lr · λ · (J_c - d)

which is what ``safe_rlhf/algorithms/ppo_lag/trainer.py`` does with SGD on
``-(J_c - d)·exp(log λ)``. λ grows while the constraint is violated and shrinks
once it holds, so it rises and then settles where the policy meets the limit.

``rule="projected"`` is the plain projected ascent ``λ ← max(0, λ + lr·(J_c - d))``
used by CUP (Yang et al., NeurIPS 2022) and OmniSafe's ``Lagrange``; it can reach
exactly 0 when the constraint is slack.

The multiplier is a plain float: it is shared by the PPO combiners, the toy
problems and the GRPO reward adapter, none of which need autograd for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

_HARD_MAX = 1e6


@dataclass
class LagrangeMultiplier:
    """λ for one constraint ``J_c ≤ cost_limit``; call :meth:`update` once per rollout with the mean cost."""

    cost_limit: float
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float | None = None
    update_delay: int = 0
    rule: Literal["log", "exponentiated", "projected"] = "log"
    history: list[float] = field(default_factory=list)
    _log_lambda: float = field(init=False)
    _linear: float = field(init=False)
    _updates: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.lambda_init <= 0 and self.rule != "projected":
            raise ValueError(f"lambda_init must be > 0 with rule={self.rule!r} (λ = exp(log λ))")
        if self.lambda_init < 0:
            raise ValueError("lambda_init must be >= 0")
        self._log_lambda = math.log(self.lambda_init) if self.lambda_init > 0 else -math.inf
        self._linear = self.lambda_init
        self.history.append(self.value)

    @property
    def value(self) -> float:
        """The current λ (≥ 0)."""
        return self._linear if self.rule == "projected" else math.exp(self._log_lambda)

    def update(self, mean_cost: float) -> float:
        """One ascent step on ``λ·(mean_cost - cost_limit)``; returns the new λ.

        The first ``update_delay`` calls only record λ (Safe RLHF's
        ``lambda_update_delay_steps``: let the value heads warm up first).
        """
        self._updates += 1
        if self._updates > self.update_delay:
            violation = mean_cost - self.cost_limit
            if self.rule in ("log", "exponentiated"):
                scale = self.value if self.rule == "log" else 1.0
                self._log_lambda += self.lambda_lr * scale * violation
                # The step grows with λ itself, so an unbounded λ can overflow in a few updates.
                self._log_lambda = min(self._log_lambda, math.log(self.lambda_max or _HARD_MAX))
            else:
                self._linear = max(0.0, self._linear + self.lambda_lr * violation)
                if self.lambda_max is not None:
                    self._linear = min(self._linear, self.lambda_max)
        self.history.append(self.value)
        return self.value
