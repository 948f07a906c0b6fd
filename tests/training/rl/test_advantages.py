"""GAE and normalisation on hand-computed cases (training/rl/advantages.py)."""

from __future__ import annotations

import pytest
import torch

from training.rl.advantages import RolloutBatch, gae, normalize


def test_gae_matches_the_recursion_and_stops_at_the_episode_end() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # the second episode has one step
    gamma, lam = 0.9, 0.5
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    d2 = 1.0 - 0.5
    d1 = 0.0 + gamma * 0.5 - 0.5
    d0 = 0.0 + gamma * 0.5 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert adv[1].tolist() == pytest.approx([2.0 - 1.0, 0.0, 0.0])  # padding's value 9 is never bootstrapped
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.5, a2 + 0.5])


def test_normalize_ignores_padding() -> None:
    x = torch.tensor([[1.0, 3.0], [5.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    centred = normalize(x, mask, "center")
    assert centred.flatten().tolist() == pytest.approx([-2.0, 0.0, 2.0, 0.0])
    whitened = normalize(x, mask, "whiten")
    assert float((whitened * mask).sum()) == pytest.approx(0.0, abs=1e-6)
    assert float((whitened**2 * mask).sum() / mask.sum()) == pytest.approx(1.0, rel=1e-4)
    assert normalize(x, mask, "none") is x


def test_batch_select_and_objective_mean() -> None:
    n = 4
    batch = RolloutBatch(
        old_logp=torch.zeros(n, 2),
        mask=torch.ones(n, 2),
        advantages={"r": torch.arange(8.0).reshape(n, 2)},
        returns={"r": torch.zeros(n, 2)},
        old_values={"r": torch.zeros(n, 2)},
        totals={"r": torch.tensor([1.0, 2.0, 3.0, 4.0])},
        kinds={"r": "reward"},
    )
    assert batch.objective_mean("r") == pytest.approx(2.5)
    sub = batch.select(torch.tensor([3, 1]))
    assert sub.size == 2 and sub.totals["r"].tolist() == [4.0, 2.0]
    assert sub.advantages["r"].tolist() == [[6.0, 7.0], [2.0, 3.0]]
