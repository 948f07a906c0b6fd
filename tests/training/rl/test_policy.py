"""The policy's sampling and forward pass (training/rl/policy.py) on a tiny random LM."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.training.rl.helpers import EVAL, TRAIN, tiny_config
from training.args import peft_config
from training.rl.policy import build_policy, collate, forward, generate


def test_forward_matches_an_unpadded_pass(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Left padding and position ids must not change a row's log-probs: the PPO ratio depends on it."""
    config = tiny_config(tiny_lm_dir, tmp_path)
    policy = build_policy(config, n_objectives=2, peft_config=peft_config(config, "CAUSAL_LM"))
    samples = generate(policy, [TRAIN[0], EVAL[1]], config, max_new_tokens=5, greedy=False)
    batch = collate(samples, policy.pad_id)
    with torch.no_grad():
        logp, values = forward(policy, batch, torch.arange(2), temperature=1.0)
        ids = torch.tensor([samples[1].prompt_ids + samples[1].completion_ids])
        logits = policy.model(input_ids=ids).logits[0, len(samples[1].prompt_ids) - 1 : -1]
        alone = torch.log_softmax(logits, -1).gather(-1, ids[0, len(samples[1].prompt_ids) :, None])[:, 0]
    n = len(samples[1].completion_ids)
    assert torch.allclose(logp[1, :n], alone, atol=1e-4)
    assert values.shape == (2, batch["T"], 2)


def test_generated_rows_end_at_eos_and_collate_right_pads_answers(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path)
    policy = build_policy(config, n_objectives=1, peft_config=peft_config(config, "CAUSAL_LM"))
    samples = generate(policy, TRAIN, config, max_new_tokens=8, greedy=True)
    for s in samples:
        assert 1 <= len(s.completion_ids) <= 8
        assert all(t not in policy.eos_ids for t in s.completion_ids[:-1])
    batch = collate(samples, policy.pad_id)
    assert batch["mask"].sum(1).tolist() == [float(len(s.completion_ids)) for s in samples]
    assert batch["input_ids"].shape == (len(samples), batch["P"] + batch["T"])
