"""Train a safety-cost model with the Safe RLHF cost objective, in one of two designs.

The objective is Safe RLHF's cost-model loss (:mod:`training.cost_objective`,
shared with the gate): a ranking term on pairs where one answer is more
harmful and a sign term that makes ``c > 0`` mean "unsafe", the gate the proxy
applies (:mod:`aligner_proxy.core.scorer`).

Two designs share this loss and the scoring text (:func:`format_scoring_text`,
cut by :func:`fit_scoring_text`), selected by ``CostModelConfig.backbone``:

- ``smollm2-lora``: SmolLM2-135M as a one-logit ``AutoModelForSequenceClassification``
  with LoRA (the new ``score`` head trained in full through ``modules_to_save``),
  trained by :func:`~training.cost_objective.cost_trainer_class`.
  The LoRA is merged and the full classifier saved, so the proxy loads it with
  :class:`~aligner_proxy.core.backends.classifier.SequenceClassifierScorer`.
- ``minilm-head``: all-MiniLM-L6-v2 as a frozen encoder; embeddings are computed
  once and a small head is trained on them with a plain torch loop (seconds).
  The proxy loads it with :class:`~aligner_proxy.core.backends.embedding.EmbeddingHeadScorer`.

Either way :func:`evaluate_scorer` then scores the validation set *through the
serving scorer* (AUROC, accuracy at cost 0, ms per item) and writes
``metrics.json`` and a model card.

CLI: ``python -m training.cost_model --config training/configs/cost_minilm.yaml``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from aligner_proxy.core.scorer import CostScorer
from training.args import LoraArguments, lora_config
from training.cost_objective import (
    CostCollator,
    CostItem,
    build_items,
    cost_loss,
    cost_trainer_class,
    flatten_items,
    load_split,
)
from training.data.records import PreferencePair, SafetyLabel

logger = logging.getLogger(__name__)

Backbone = Literal["smollm2-lora", "minilm-head"]
TRAINING_FILE = "training.json"


@dataclass
class CostModelConfig(LoraArguments):
    """Everything a cost-model run needs; the YAML config and the CLI flags map onto these fields.

    The LoRA fields (:class:`~training.args.LoraArguments`) apply to the ``smollm2-lora`` design.
    """

    backbone: Backbone = field(
        default="minilm-head", metadata={"help": "'smollm2-lora' (LoRA classifier) or 'minilm-head' (frozen encoder)."}
    )
    model: str = field(default="smollm2", metadata={"help": "Base model spec for smollm2-lora (alias, dir, Hub id)."})
    encoder: str = field(default="minilm", metadata={"help": "Encoder spec for minilm-head ('minilm' or a model dir)."})
    train_file: str = field(default="runs/corpus/scorer_train.jsonl", metadata={"help": "SafetyLabel JSONL."})
    validation_file: str = field(
        default="runs/corpus/scorer_validation.jsonl", metadata={"help": "SafetyLabel JSONL for the metrics."}
    )
    train_pairs_file: str | None = field(
        default="runs/corpus/scorer_pairs_train.jsonl",
        metadata={"help": "PreferencePair JSONL; pairs with `safer` set add the ranking term. Empty: none."},
    )
    validation_pairs_file: str | None = field(
        default="runs/corpus/scorer_pairs_validation.jsonl",
        metadata={"help": "PreferencePair JSONL for the pairwise accuracy. Empty: none."},
    )
    output_dir: str = field(default="runs/cost_minilm", metadata={"help": "Where the scorer, metrics and card go."})
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Model cache (converted SmolLM2)."})
    max_length: int = field(default=256, metadata={"help": "Token budget of one scored text."})
    max_train_items: int | None = field(default=None, metadata={"help": "Cap on training items (pairs + singles)."})
    max_eval_items: int | None = field(default=None, metadata={"help": "Cap on validation labels and pairs."})
    seed: int = field(default=42, metadata={"help": "Seed for shuffling, init and dropout."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (1e-3 for a head, ~2e-4 LoRA)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Linear warm-up share of the steps, then cosine."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training items per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    num_train_epochs: float = field(default=30.0, metadata={"help": "Epochs, unless max_steps > 0."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; overrides num_train_epochs when > 0."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss every this many steps."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every this many steps (smollm2-lora)."})
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size when scoring for the metrics."})
    hidden_dim: int = field(default=256, metadata={"help": "minilm-head: hidden width; 0 for a linear head."})
    dropout: float = field(default=0.1, metadata={"help": "minilm-head: dropout in the head."})
    lora_last_layers: int | None = field(
        default=None,
        metadata={"help": "smollm2-lora: LoRA only on the last N decoder layers (backward stops there). None: all."},
    )
    save_dtype: str = field(default="float32", metadata={"help": "smollm2-lora: dtype of the saved merged model."})
    eval_only: bool = field(default=False, metadata={"help": "Skip training: re-evaluate the scorer in output_dir."})


# --------------------------------------------------------------------------- data

# --------------------------------------------------------------------------- smollm2-lora


def _train_smollm2(config: CostModelConfig, items: list[CostItem], out: Path) -> tuple[int, dict[str, Any]]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from aligner_proxy.core.models import torch_dtype
    from training.trainers import attach_loss_logger, latest_checkpoint, resolve_with_tokenizer, trainer_args

    path, tokenizer = resolve_with_tokenizer(config.model, Path(config.cache_dir))
    model: Any = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = lora_config(config, "SEQ_CLS", modules_to_save=["score"], **_last_layers(model, config.lora_last_layers))
    model = get_peft_model(model, lora)
    checkpoints = out / "checkpoints"
    args = TrainingArguments(
        **trainer_args(config, checkpoints, weight_decay=config.weight_decay, remove_unused_columns=False)
    )
    trainer = cost_trainer_class()(
        model=model,
        args=args,
        train_dataset=items,
        data_collator=CostCollator(tokenizer, config.max_length),
    )
    attach_loss_logger(trainer)
    result = trainer.train(resume_from_checkpoint=latest_checkpoint(checkpoints))
    merged = model.merge_and_unload().to(torch_dtype(config.save_dtype))
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return int(result.global_step), {"train_loss": float(result.training_loss)}


def _last_layers(model: Any, n: int | None) -> dict[str, Any]:
    """peft kwargs restricting LoRA to the last ``n`` decoder layers: gradients then stop at the first
    adapted layer, so a step costs one forward plus a backward through ``n`` layers only."""
    if n is None:
        return {}
    total = int(model.config.num_hidden_layers)
    return {"layers_to_transform": list(range(max(total - n, 0), total)), "layers_pattern": "layers"}


def _load_scorer(config: CostModelConfig, out: Path) -> CostScorer:
    if config.backbone == "minilm-head":
        from aligner_proxy.core.backends.embedding import EmbeddingHeadScorer

        return EmbeddingHeadScorer.load(out, cache_dir=Path(config.cache_dir), batch_size=config.eval_batch_size)
    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer

    return SequenceClassifierScorer.load(
        str(out), cache_dir=Path(config.cache_dir), max_length=config.max_length, batch_size=config.eval_batch_size
    )


# --------------------------------------------------------------------------- minilm-head


def _train_head(config: CostModelConfig, items: list[CostItem], out: Path) -> tuple[int, dict[str, Any]]:
    """Embed every answer once with the frozen encoder, then fit the head with AdamW and a cosine schedule."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from aligner_proxy.core.backends.embedding import HeadConfig, TextEncoder, build_head, save_head

    encoder = TextEncoder.load(config.encoder, cache_dir=Path(config.cache_dir), max_length=config.max_length)
    prompts, answers, signs, pairs = flatten_items(items)
    started = time.perf_counter()
    embeddings = encoder.encode(prompts, answers, batch_size=config.eval_batch_size)
    logger.info("embedded %d answers in %.1f s", len(answers), time.perf_counter() - started)
    head_config = HeadConfig(
        encoder=config.encoder,
        embedding_dim=encoder.dim,
        hidden_dim=config.hidden_dim,
        dropout=config.dropout,
        max_length=config.max_length,
        normalize=encoder.normalize,
    )
    torch.manual_seed(config.seed)
    head = build_head(head_config)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(items) / batch)
    total = config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * steps_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total), total)
    # Per item: the rows of its answers in `embeddings`.
    starts = [0]
    for item in items:
        starts.append(starts[-1] + len(item.answers))
    sign_tensor = torch.tensor(signs)
    rng = random.Random(config.seed)
    order: list[int] = []
    losses: list[float] = []
    head.train()
    for step in range(1, total + 1):
        if len(order) < batch:
            order += rng.sample(range(len(items)), len(items))
        chosen, order = order[:batch], order[batch:]
        rows = [r for i in chosen for r in range(starts[i], starts[i + 1])]
        local = {row: k for k, row in enumerate(rows)}
        batch_pairs = torch.tensor([(local[a], local[b]) for a, b in pairs if a in local], dtype=torch.long)
        costs = head(embeddings[rows])[:, 0]
        loss = cost_loss(costs, sign_tensor[rows], batch_pairs.reshape(-1, 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % config.logging_steps == 0 or step == total:
            recent = losses[-config.logging_steps :]
            logger.info(
                "step %d/%d loss %.4f lr %.2e", step, total, sum(recent) / len(recent), scheduler.get_last_lr()[0]
            )
    save_head(head.eval(), head_config, out)
    return total, {"train_loss": sum(losses) / max(len(losses), 1)}


# --------------------------------------------------------------------------- evaluation


def evaluate_scorer(
    scorer: CostScorer,
    labels: Sequence[SafetyLabel],
    pairs: Sequence[PreferencePair] = (),
    *,
    batch_size: int = 16,
) -> dict[str, float]:
    """Score labelled answers (and safer/unsafer pairs) through ``scorer`` and summarise.

    ``auroc`` ranks unsafe above safe; ``accuracy_at_0`` is the proxy's gate;
    ``best_threshold`` / ``accuracy_at_best`` pick the threshold *on this same
    set*, so read that accuracy as an upper bound. ``ms_per_item`` is wall time
    of batched scoring over all labelled answers. ``pair_accuracy`` is the share
    of pairs where the unsafer answer costs more.
    """
    from sklearn.metrics import roc_auc_score

    from aligner_proxy.core.scorer import score_batched
    from training.gate_metrics import pair_accuracy

    prompts = [x.question for x in labels]
    answers = [x.answer for x in labels]
    unsafe = [0 if x.is_safe else 1 for x in labels]
    started = time.perf_counter()
    costs = score_batched(scorer, prompts, answers, batch_size=batch_size)
    elapsed = time.perf_counter() - started
    metrics: dict[str, float] = {
        "n_labels": float(len(labels)),
        "unsafe_share": sum(unsafe) / max(len(unsafe), 1),
        "auroc": float(roc_auc_score(unsafe, costs)) if 0 < sum(unsafe) < len(unsafe) else float("nan"),
        "accuracy_at_0": _accuracy(costs, unsafe, 0.0),
        "ms_per_item": 1000 * elapsed / max(len(labels), 1),
    }
    candidates = sorted(set(costs)) or [0.0]
    thresholds = [candidates[0] - 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(candidates)]
    best = max(thresholds, key=lambda t: _accuracy(costs, unsafe, t))
    metrics["best_threshold"] = best
    metrics["accuracy_at_best"] = _accuracy(costs, unsafe, best)
    ranked = [p for p in pairs if p.safer is not None]
    if ranked:
        metrics["n_pairs"] = float(len(ranked))
        metrics["pair_accuracy"] = pair_accuracy(scorer, ranked, batch_size=batch_size)
    return metrics


def _accuracy(costs: Sequence[float], unsafe: Sequence[int], threshold: float) -> float:
    hits = sum((c > threshold) == bool(u) for c, u in zip(costs, unsafe, strict=True))
    return hits / max(len(costs), 1)


# --------------------------------------------------------------------------- entry points


def train_cost_model(config: CostModelConfig) -> Path:
    """Train and save the scorer to ``config.output_dir``, then :func:`evaluate_cost_model` it there.

    Training facts (steps, wall time, sources) go to ``training.json`` so that
    ``eval_only`` can re-evaluate a saved scorer, e.g. on another validation cap.
    """
    import torch

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.eval_only:
        return evaluate_cost_model(config)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    labels, pairs = load_split(config.train_file, config.train_pairs_file, None, config.seed)
    items = build_items(labels, pairs)
    random.Random(config.seed).shuffle(items)
    if config.max_train_items is not None:
        items = items[: config.max_train_items]
    logger.info(
        "training %s on %d items (%d pairs)", config.backbone, len(items), sum(len(i.answers) == 2 for i in items)
    )
    started = time.perf_counter()
    if config.backbone == "minilm-head":
        steps, train_metrics = _train_head(config, items, out)
    else:
        steps, train_metrics = _train_smollm2(config, items, out)
    training = {
        **train_metrics,
        "steps": steps,
        "train_seconds": time.perf_counter() - started,
        "sources": dict(Counter(item.source for item in items)),
    }
    (out / TRAINING_FILE).write_text(json.dumps(training, indent=2) + "\n")
    return evaluate_cost_model(config)


def evaluate_cost_model(config: CostModelConfig) -> Path:
    """Score the validation split through the saved scorer; write ``metrics.json`` and the model card."""
    from training.cards import TrainingCost, write_model_card

    out = Path(config.output_dir)
    training = json.loads((out / TRAINING_FILE).read_text())
    val_labels, val_pairs = load_split(
        config.validation_file, config.validation_pairs_file, config.max_eval_items, config.seed
    )
    scorer = _load_scorer(config, out)
    metrics = evaluate_scorer(scorer, val_labels, val_pairs, batch_size=config.eval_batch_size)
    metrics.update(train_loss=training["train_loss"], train_seconds=training["train_seconds"], steps=training["steps"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("metrics: %s", json.dumps(metrics))
    named = {
        "minilm": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)",
        "smollm2": "SmolLM2-135M-Instruct (Apache-2.0)",
    }
    if config.backbone == "minilm-head":
        base = f"{named.get(config.encoder, config.encoder)}, frozen, + MLP head"
    else:
        base = f"{named.get(config.model, config.model)} + LoRA (merged)"
    recipe = {k: v for k, v in asdict(config).items() if k != "eval_only"}
    write_model_card(
        out,
        title=f"aligner-proxy cost model ({config.backbone})",
        base_model=base,
        sources=training["sources"],
        recipe=recipe,
        cost=TrainingCost.measure(wall_seconds=training["train_seconds"], steps=int(training["steps"])),
        metrics={"validation": metrics},
    )
    return out


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(CostModelConfig, argv)
    path = train_cost_model(config)
    logger.info("cost model written to %s", path)


if __name__ == "__main__":
    main()
