"""GRPO on reward − λ·cost with TRL's ``GRPOTrainer``: the constrained run TRL can do with one reward function.

GRPO (Shao et al. 2024, DeepSeekMath) needs no value head: it samples a group
of answers per prompt and uses their group-normalised rewards as advantages.
TRL's ``GRPOTrainer`` takes reward functions with the project scorers'
signature, so the only thing added here is the reward:
:class:`~training.rl.rewards.CombinedReward`, ``(r - λ·c) / (1 + λ)``, whose λ
is a :class:`~training.rl.lagrangian.LagrangeMultiplier` stepped once per
generation batch from that batch's mean cost (Safe RLHF's dual update, here
outside the advantage). TRL logs ``lambda`` and ``cost`` through
``log_metric``; the λ trajectory also lands in ``metrics.json``.

Prompts are conversational (TRL applies the chat template), drawn from the
same harmful + benign pools as the PPO demo (:func:`~training.rl.ppo.load_prompts`).

CLI: ``python -m training.rl.grpo --config training/configs/rl_grpo.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.args import peft_config
from training.rl.lagrangian import LagrangeMultiplier
from training.rl.policy import PolicyModelArguments
from training.rl.rewards import CombinedReward, Transform, build_scorer

logger = logging.getLogger(__name__)


@dataclass
class GRPOLagrangianConfig(PolicyModelArguments):
    """A GRPO run on ``(r - λc) / (1 + λ)``; YAML keys and CLI flags map onto these fields."""

    reward_scorer: str = field(default="non-refusal", metadata={"help": "build_scorer spec of the reward."})
    reward_transform: Transform = field(default="identity", metadata={"help": "identity | sigmoid | negate."})
    cost_scorer: str = field(default="keyword", metadata={"help": "build_scorer spec of the cost."})
    cost_transform: Transform = field(default="sigmoid", metadata={"help": "identity | sigmoid | negate."})
    cost_limit: float = field(default=0.1, metadata={"help": "d in E[c] <= d (on the transformed cost)."})
    lambda_init: float = field(default=1.0, metadata={"help": "Initial λ."})
    lambda_lr: float = field(default=0.1, metadata={"help": "Learning rate of log λ; 0 keeps λ fixed."})
    lambda_max: float | None = field(default=10.0, metadata={"help": "Cap on λ."})
    data_dir: str = field(default="/work/shared/data", metadata={"help": "Shared data (prompts)."})
    n_harmful: int = field(default=32, metadata={"help": "Harmful training prompts."})
    n_benign: int = field(default=32, metadata={"help": "Benign training prompts."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate."})
    max_steps: int = field(default=30, metadata={"help": "Optimiser steps."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Answers per step (a multiple of groups)."})
    num_generations: int = field(default=4, metadata={"help": "Answers per prompt (the GRPO group)."})
    max_completion_length: int = field(default=40, metadata={"help": "Answer budget."})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient to the reference."})
    output_dir: str = field(default="runs/rl_grpo", metadata={"help": "Checkpoints, metrics and curves."})
    seed: int = field(default=0, metadata={"help": "Seed."})


def build_grpo_trainer(
    config: GRPOLagrangianConfig, prompts: Sequence[str] | None = None
) -> tuple[Any, CombinedReward]:
    """The configured ``GRPOTrainer`` and its reward function (which holds the multiplier); nothing trained yet."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from aligner_proxy.core.models import resolve_model

    if prompts is None:
        from training.rl.ppo import load_prompts

        train, _ = load_prompts(
            config.data_dir, n_train=(config.n_harmful, config.n_benign), n_eval=(0, 0), seed=config.seed
        )
        prompts = [p.text for p in train]
    cache = Path(config.cache_dir)
    multiplier = (
        LagrangeMultiplier(
            cost_limit=config.cost_limit,
            lambda_init=config.lambda_init,
            lambda_lr=config.lambda_lr,
            lambda_max=config.lambda_max,
        )
        if config.lambda_lr > 0
        else None
    )
    reward = CombinedReward(
        build_scorer(config.reward_scorer, cache_dir=cache),
        build_scorer(config.cost_scorer, cache_dir=cache),
        lam=config.lambda_init,
        multiplier=multiplier,
        reward_transform=config.reward_transform,
        cost_transform=config.cost_transform,
    )
    args = GRPOConfig(
        output_dir=str(Path(config.output_dir) / "checkpoints"),
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        beta=config.beta,
        logging_steps=1,
        save_strategy="no",
        seed=config.seed,
        report_to=[],
        disable_tqdm=True,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    reward_funcs: list[Any] = [reward]
    trainer = GRPOTrainer(
        model=resolve_model(config.model, cache_dir=cache),
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        peft_config=peft_config(config, "CAUSAL_LM"),
    )
    return trainer, reward


def train_grpo(config: GRPOLagrangianConfig, prompts: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; write ``metrics.json`` (log history, λ trajectory) and ``curves.png`` to ``output_dir``."""
    from training.rl.plots import plot_curves

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer, reward = build_grpo_trainer(config, prompts)
    started = time.perf_counter()
    trainer.train()
    history = [row for row in trainer.state.log_history if "reward" in row]
    metrics = {
        "history": history,
        "lambda_trajectory": reward.multiplier.history if reward.multiplier is not None else [reward.lam],
        "wall_seconds": time.perf_counter() - started,
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    name = reward.__name__
    plot_curves(
        {"grpo": history},
        ["reward", f"rewards/{name}/mean", "cost", "lambda"],
        out / "curves.png",
        title=f"GRPO on (r - λc)/(1+λ), {config.model}",
        limits={"cost": config.cost_limit},
        x_label="step",
    )
    return metrics


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = train_grpo(parse_config(GRPOLagrangianConfig, argv))
    logger.info("λ trajectory: %s", [round(x, 4) for x in metrics["lambda_trajectory"]])


if __name__ == "__main__":
    main()
