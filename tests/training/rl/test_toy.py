"""The combiners on the toy constrained problems (training/rl/toy.py, training/rl/combiners.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from training.rl.toy import ToyConfig, exact_returns, make_grid, make_policy, run_config, train_toy

LIMIT = 0.25  # the bandit's default cost limit


def test_unconstrained_ppo_exceeds_the_cost_limit() -> None:
    history = train_toy(run_config(ToyConfig(problem="bandit", iterations=60), "unconstrained"))
    assert history[-1]["reward"] > 0.85
    assert history[-1]["cost"] > LIMIT + 0.4


def test_ppo_lagrangian_ends_within_the_limit_and_lambda_rises_then_settles() -> None:
    config = ToyConfig(problem="bandit")
    history = train_toy(run_config(config, "lagrangian"))
    lam = [row["lambda/cost"] for row in history]
    peak = max(range(len(lam)), key=lam.__getitem__)
    assert lam[peak] > 2 * config.lambda_init  # it rose while the policy was over the limit ...
    assert peak < 2 * len(lam) // 3
    tail = lam[-len(lam) // 4 :]
    assert statistics.pstdev(tail) < 0.25 * statistics.mean(tail)  # ... then settled
    assert history[-1]["cost"] <= LIMIT + 0.02  # the exact J_c of the final policy
    assert history[-1]["reward"] > 0.45  # not by giving up: the cheapest arm alone earns ~0.35 on average


def test_cup_keeps_the_cost_surrogate_within_the_limit_after_projection() -> None:
    history = train_toy(run_config(ToyConfig(problem="bandit", iterations=25), "cup"))[1:]
    assert any(row["cost_surrogate_half"] > LIMIT for row in history)  # the improvement step did overshoot
    for row in history:
        assert row["cost_surrogate_after"] <= LIMIT + 1e-6
    assert history[-1]["cost"] <= LIMIT + 0.05


def test_exact_returns_of_the_grid_paths() -> None:
    import torch

    env = make_grid()
    probs = torch.zeros(env.n_states, env.n_actions)
    probs[:, 3] = 1.0  # always right: the hazardous bottom row
    assert exact_returns(env, probs) == pytest.approx((0.8, 3.0))
    policy = make_policy(env)
    j_r, j_c = exact_returns(env, policy.probs())  # uniform random walk
    assert 0.0 < j_c < 3.0 and j_r < 0.8


def test_cli_writes_learning_curves(tmp_path: Path) -> None:
    from training.rl.toy import main

    main(
        [
            "--problems", "bandit", "--compare", "unconstrained", "lagrangian",
            "--iterations", "3", "--output_dir", str(tmp_path / "runs"), "--img_dir", str(tmp_path / "img"),
        ]
    )  # fmt: skip
    assert (tmp_path / "img" / "rl_toy_bandit.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "runs" / "toy_bandit.json").read_text())
    assert saved["cost_limit"] == LIMIT and set(saved["runs"]) == {"unconstrained", "lagrangian"}
    assert len(saved["runs"]["lagrangian"]) == 4
