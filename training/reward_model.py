"""A Bradley–Terry reward model on preference pairs, trained with TRL's ``RewardTrainer``.

The loss is TRL's: ``-log σ(r_preferred - r_other)`` (Bradley & Terry 1952, as
used by InstructGPT's reward model). ``preference`` picks which answer of a
:class:`~training.data.records.PreferencePair` is preferred: ``chosen`` (people's
overall preference, e.g. HH-RLHF) or ``safer`` (only pairs that say so).

Rows are tokenised here, not by TRL: each text is the scoring format
(:func:`fit_scoring_text`, no EOS appended) that
:class:`~aligner_proxy.core.backends.classifier.SequenceClassifierScorer` sends at
inference. The saved model is a plain one-logit classifier (LoRA merged) whose
logit is ``-reward`` when ``save_as_cost`` is set (the default): it then loads
through ``SequenceClassifierScorer`` as a :class:`~aligner_proxy.core.scorer.CostScorer`
where higher means worse, like every scorer; negate its scores for a reward.

CLI: ``python -m training.reward_model --config training/configs/reward.yaml``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.core.backends.classifier import fit_scoring_text
from aligner_proxy.core.files import read_jsonl_models
from training.args import ModelArguments, peft_config
from training.data.records import PreferencePair

logger = logging.getLogger(__name__)


@dataclass
class RewardModelConfig(ModelArguments):
    """Everything a reward-model run needs; the YAML config and the CLI flags map onto these fields."""

    train_file: str = field(default="runs/corpus/scorer_pairs_train.jsonl", metadata={"help": "PreferencePair JSONL."})
    validation_file: str | None = field(
        default="runs/corpus/scorer_pairs_validation.jsonl", metadata={"help": "PreferencePair JSONL for metrics."}
    )
    preference: Literal["chosen", "safer"] = field(
        default="chosen", metadata={"help": "Which answer is preferred: 'chosen' or the 'safer' one."}
    )
    output_dir: str = field(default="runs/reward_model", metadata={"help": "Where the model, metrics and card go."})
    max_length: int = field(default=256, metadata={"help": "Token budget of one scored text."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Pairs per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Linear warm-up share, then cosine decay."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs, unless max_steps > 0."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; overrides epochs when > 0."})
    center_rewards_coefficient: float | None = field(
        default=0.01, metadata={"help": "Pull rewards towards zero mean (Eisenstein et al. 2023); None: off."}
    )
    max_train_items: int | None = field(default=None, metadata={"help": "Cap on training pairs (after shuffle)."})
    max_eval_items: int | None = field(default=None, metadata={"help": "Cap on validation pairs."})
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size when scoring for the metrics."})
    save_as_cost: bool = field(default=True, metadata={"help": "Negate the head on save: logit = -reward."})
    save_dtype: str = field(default="float32", metadata={"help": "dtype of the saved merged model."})
    seed: int = field(default=42, metadata={"help": "Seed for shuffling and init."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss every this many steps."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every this many steps."})


def oriented_pairs(pairs: Sequence[PreferencePair], preference: str) -> list[tuple[str, str, str]]:
    """``(prompt, preferred, other)`` per usable pair."""
    if preference == "chosen":
        return [(p.prompt, p.chosen, p.rejected) for p in pairs]
    return [
        (p.prompt, p.chosen, p.rejected) if p.safer == "chosen" else (p.prompt, p.rejected, p.chosen)
        for p in pairs
        if p.safer is not None
    ]


def tokenize_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str, str]], max_length: int) -> list[dict[str, Any]]:
    """TRL's processed preference rows (``chosen_ids`` / ``rejected_ids``), in the scorer's exact text."""

    def ids(prompt: str, completion: str) -> list[int]:
        return list(tokenizer(fit_scoring_text(tokenizer, prompt, completion, max_length))["input_ids"])

    return [{"chosen_ids": ids(p, good), "rejected_ids": ids(p, bad)} for p, good, bad in pairs]


def _load(path: str, preference: str, cap: int | None, seed: int) -> tuple[list[tuple[str, str, str]], Counter[str]]:
    records = read_jsonl_models(path, PreferencePair)
    random.Random(seed).shuffle(records)
    records = [r for r in records if preference == "chosen" or r.safer is not None][:cap]
    return oriented_pairs(records, preference), Counter(r.source for r in records)


def train_reward_model(config: RewardModelConfig) -> Path:
    """Train, save a one-logit classifier to ``output_dir``, evaluate it through ``SequenceClassifierScorer``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer
    from aligner_proxy.core.models import torch_dtype
    from training.cards import TrainingCost, write_model_card
    from training.trainers import attach_loss_logger, latest_checkpoint, resolve_with_tokenizer, trainer_args

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path, tokenizer = resolve_with_tokenizer(config.model, Path(config.cache_dir))
    train, sources = _load(config.train_file, config.preference, config.max_train_items, config.seed)
    logger.info("training a reward model on %d pairs (preference: %s)", len(train), config.preference)
    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        **trainer_args(
            config,
            out / "checkpoints",
            max_length=config.max_length,
            center_rewards_coefficient=config.center_rewards_coefficient,
            bf16=False,
            gradient_checkpointing=False,
        )
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(tokenize_pairs(tokenizer, train, config.max_length)),
        processing_class=tokenizer,
        peft_config=peft_config(config, "SEQ_CLS", modules_to_save=["score"]),  # LoRA merged on save
    )
    attach_loss_logger(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=latest_checkpoint(out / "checkpoints"))
    wall = time.perf_counter() - started

    trained: Any = trainer.model
    merged = trained.merge_and_unload() if hasattr(trained, "merge_and_unload") else trained
    if config.save_as_cost:
        with torch.no_grad():
            head = merged.score
            head.weight.neg_()
            if getattr(head, "bias", None) is not None:
                head.bias.neg_()
    merged.to(torch_dtype(config.save_dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)

    metrics: dict[str, float] = {"train_loss": float(result.training_loss), "steps": float(result.global_step)}
    if config.validation_file:
        validation, _ = _load(config.validation_file, config.preference, config.max_eval_items, config.seed)
        scorer = SequenceClassifierScorer.load(
            str(out), cache_dir=Path(config.cache_dir), max_length=config.max_length, batch_size=config.eval_batch_size
        )
        metrics.update(evaluate_pairs(scorer.score, validation, lower_is_better=config.save_as_cost))
    metrics["train_seconds"] = wall
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(
        out,
        title=f"aligner-proxy reward model (Bradley–Terry, preference: {config.preference})",
        base_model=config.model + (" + LoRA (merged)" if config.use_lora else " (full fine-tune)"),
        sources=dict(sources),
        recipe=asdict(config),
        cost=TrainingCost.measure(wall_seconds=wall, steps=int(result.global_step)),
        metrics={"validation": metrics},
    )
    logger.info("reward model written to %s: %s", out, metrics)
    return out


def evaluate_pairs(
    score: Any, pairs: Sequence[tuple[str, str, str]], *, lower_is_better: bool = True
) -> dict[str, float]:
    """Share of ``(prompt, preferred, other)`` pairs ranked right by ``score``, and ms per scored text."""
    if not pairs:
        return {}
    prompts = [p for p, _, _ in pairs]
    started = time.perf_counter()
    good = score(prompts, [g for _, g, _ in pairs])
    bad = score(prompts, [b for _, _, b in pairs])
    elapsed = time.perf_counter() - started
    right = sum((g < b) if lower_is_better else (g > b) for g, b in zip(good, bad, strict=True))
    return {
        "n_pairs": float(len(pairs)),
        "pair_accuracy": right / len(pairs),
        "ms_per_item": 500 * elapsed / len(pairs),
    }


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_reward_model(parse_config(RewardModelConfig, argv))


if __name__ == "__main__":
    main()
