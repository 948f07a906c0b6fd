"""Multi-objective PPO on a tiny random language policy (training/rl/ppo.py), 2-3 steps per test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.rl.helpers import EVAL, TRAIN, tiny_config
from training.rl.ppo import Objective, PPOTrainer, parse_objective, run_demo
from training.rl.rewards import NonRefusalReward
from training.rl.seq2seq_rm import token_char_spans


def lora_state(trainer: PPOTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.policy.policy_parameters()]


def test_demo_writes_numbers_and_curves(tiny_lm_dir: Path, tiny_classifier_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(
        tiny_lm_dir,
        tmp_path,
        combiner="lagrangian",
        lambda_init=1.0,
        lambda_lr=0.5,
        eval_objectives=["judge:cost:identity:classifier:" + str(tiny_classifier_dir)],
    )
    metrics = run_demo(config, (TRAIN, EVAL))
    out = Path(config.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    for stage in ("before", "after"):
        assert set(saved[stage]) == {"harmful", "benign", "all"}
        assert {"helpful", "harm", "harm_rate", "refusal_rate", "judge", "judge_rate"} <= set(saved[stage]["all"])
    lam = saved["multiplier_trajectory"]["lambda/harm"]
    assert len(lam) == 2 and lam[0] != 1.0  # one dual step per rollout, before the policy step
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [1.0, 2.0]
    assert not any("judge" in key for row in history for key in row)  # measured, never trained on
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the reference
    assert (out / "curves.png").stat().st_size > 1000
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * len(EVAL)
    assert metrics["steps"] == 2


@pytest.mark.parametrize("combiner", ["weighted", "gapo", "pgapo", "cup"])
def test_every_combiner_updates_the_policy(combiner: str, tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path, combiner=combiner, steps=1, preferences=[0.3, 0.7])
    objectives = [parse_objective(s) for s in config.objectives]
    trainer = PPOTrainer(config, objectives)
    before = lora_state(trainer)
    stats = trainer.step(TRAIN)
    after = lora_state(trainer)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    if combiner in ("gapo", "pgapo"):
        assert sum(stats[f"mgda_weight/{o.name}"] for o in objectives) == pytest.approx(1.0)
    if combiner == "cup":
        assert "cost_surrogate_after" in stats


def test_token_level_rewards_and_a_shield_plug_in(
    tiny_lm_dir: Path, tmp_path: Path, tiny_rm: Any, tiny_blocker: Any
) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path, combiner="lagrangian", steps=1, shield_mode="resample")
    objectives = [
        Objective("feedback", "reward", "identity", tiny_rm),
        Objective("helpful", "reward", "identity", NonRefusalReward()),
        parse_objective("harm:cost:sigmoid:keyword"),
    ]
    trainer = PPOTrainer(config, objectives)
    trainer.shield = tiny_blocker  # random text from a tiny LM is off-distribution: the shield flags it
    samples, flagged = trainer.rollout(TRAIN)
    assert len(samples) == len(TRAIN) and any(flagged)
    batch, _, stats = trainer.make_batch(samples, flagged)
    assert stats["shielded"] == sum(flagged) / len(flagged)
    base = torch.tensor(
        [
            1 / (1 + torch.exp(torch.tensor(-c)).item())
            for c in objectives[2].scorer.score([s.prompt.text for s in samples], [s.text for s in samples])
        ]
    )
    assert torch.allclose(
        batch.totals["harm"], base + config.shield_penalty * torch.tensor(flagged, dtype=torch.float32)
    )
    # token-level: the per-episode total is the sum of the RM's rewards on the *policy's* tokens
    spans = [token_char_spans(trainer.policy.tokenizer, s.completion_ids, s.text) for s in samples]
    tokens = tiny_rm.token_rewards([s.prompt.text for s in samples], [s.text for s in samples], spans)
    assert [len(t) for t in tokens] == [len(s.completion_ids) for s in samples]
    assert batch.totals["feedback"].tolist() == pytest.approx([sum(t) for t in tokens], abs=1e-5)
    stats = trainer.step(TRAIN)
    assert "lambda/harm" in stats


def test_objective_specs() -> None:
    obj = parse_objective("harm:cost:sigmoid:keyword")
    assert (obj.name, obj.kind, obj.transform, obj.token_level) == ("harm", "cost", "sigmoid", False)
    with pytest.raises(ValueError, match="name:reward"):
        parse_objective("harm:penalty:identity:keyword")
