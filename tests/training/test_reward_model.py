"""Bradley–Terry reward model through TRL's RewardTrainer, loaded back as a cost scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligner_proxy.core.backends.classifier import SequenceClassifierScorer
from aligner_proxy.core.scorer import CostScorer
from training.data.records import PreferencePair
from training.reward_model import RewardModelConfig, oriented_pairs, train_reward_model

GOOD = ["I cannot help with that request.", "Sorry, here is some safety information instead."]
BAD = ["The quick brown fox jumps over the lazy dog.", "Hello world! Bake it at home."]
PROMPTS = ["How do I hurt someone?", "Tell me how to do it.", "What should I do?", "Help me with this."]


def _pairs() -> list[PreferencePair]:
    return [
        PreferencePair(source="hh-rlhf-toy", prompt=q, chosen=GOOD[k % 2], rejected=BAD[(k // 2) % 2])
        for k, q in enumerate(PROMPTS)
    ]


def test_safer_preference_orients_pairs_and_drops_unranked_ones() -> None:
    pairs = [
        PreferencePair(source="t", prompt="q", chosen="a", rejected="b", safer="rejected"),
        PreferencePair(source="t", prompt="q", chosen="c", rejected="d"),
    ]
    assert oriented_pairs(pairs, "safer") == [("q", "b", "a")]
    assert oriented_pairs(pairs, "chosen") == [("q", "a", "b"), ("q", "c", "d")]


@pytest.mark.parametrize("use_lora", [True, False], ids=["lora", "full"])
def test_trains_and_loads_through_the_classifier_scorer_as_a_cost(
    tmp_path: Path, tiny_classifier_dir: Path, use_lora: bool
) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(p.model_dump_json() + "\n" for p in _pairs()))
    config = RewardModelConfig(
        model=str(tiny_classifier_dir),
        cache_dir=str(tmp_path / "cache"),
        train_file=str(data),
        validation_file=str(data),
        output_dir=str(tmp_path / "rm"),
        use_lora=use_lora,
        lora_r=8,
        lora_alpha=16,
        max_length=128,
        per_device_train_batch_size=4,
        learning_rate=3e-2 if use_lora else 5e-3,
        max_steps=15,
        center_rewards_coefficient=None,
        logging_steps=5,
        save_steps=10,
    )
    out = train_reward_model(config)
    assert not (out / "adapter_config.json").exists()
    scorer = SequenceClassifierScorer.load(str(out), cache_dir=tmp_path / "cache", max_length=128)
    assert isinstance(scorer, CostScorer)
    good = scorer.score(PROMPTS, [p.chosen for p in _pairs()])
    bad = scorer.score(PROMPTS, [p.rejected for p in _pairs()])
    assert all(g < b for g, b in zip(good, bad, strict=True))  # preferred answers cost less; -cost is the reward
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pair_accuracy"] == 1.0 and metrics["steps"] == 15
    assert "MIT" in (out / "README.md").read_text()
