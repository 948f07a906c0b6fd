"""Fixtures of the RL tests: one torch thread, a tiny trained blocker, a tiny seq2seq RM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training.rl.helpers import synthetic_labels


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """The suite shares 2 cores with real training jobs: these tests are latency-bound, not throughput-bound."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_blocker() -> Any:
    """An ensemble blocker trained in a second on the synthetic labels (hashed features)."""
    import torch

    from training.rl.blocker import BlockerConfig, EnsembleBlocker, HashingFeaturizer, fit_ensemble

    rows = synthetic_labels(200)
    featurizer = HashingFeaturizer(512)
    x = featurizer([q for q, _, _ in rows], [a for _, a, _ in rows])
    y = torch.tensor([1.0 if h else 0.0 for _, _, h in rows])
    config = BlockerConfig(n_members=5, hidden_dim=16, epochs=15, batch_size=32, learning_rate=3e-3, seed=0)
    ensemble = fit_ensemble(x, y, config)
    blocker = EnsembleBlocker(featurizer, ensemble, uncertainty_threshold=float("inf"))
    held_out = synthetic_labels(60, seed=1)
    spreads = torch.tensor([a.std for a in blocker.assess([q for q, _, _ in held_out], [a for _, a, _ in held_out])])
    blocker.uncertainty_threshold = float(torch.quantile(spreads, 0.95)) * 1.5
    return blocker


@pytest.fixture(scope="session")
def tiny_rm(tiny_lm_dir: Path) -> Any:
    """A seq2seq RM on the tiny random LM (its predictions are arbitrary; tests stub them where they matter)."""
    from training.rl.seq2seq_rm import Seq2SeqRewardModel

    return Seq2SeqRewardModel.load(str(tiny_lm_dir), max_question_tokens=32, max_answer_tokens=32)
