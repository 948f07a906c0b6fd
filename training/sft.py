"""Supervised fine-tuning of the Aligner corrector on (question, answer, correction) triples.

The recipe follows Aligner (Ji et al., NeurIPS 2024, section 3): first a short
*identity warm-up* on Q-A-A triples (a good answer corrected to itself), so the
model starts from copying and learns to leave good answers alone, then the
Q-A-C phase on real corrections. The two phases run as one ``SFTTrainer`` over
one curriculum-ordered dataset (warm-up rows first, read sequentially), so a
single cosine schedule, one checkpoint directory and ``resume_from_checkpoint``
cover both: a killed run picks up at the exact row where it stopped.

Each row is TRL's *prompt-completion* format: the prompt is rendered by
:meth:`aligner_proxy.core.corrector.CorrectionPrompter.build_prompt`, the very call the proxy
makes at inference, and the completion is ``" " + correction`` (TRL appends
EOS). With ``completion_only_loss`` the prompt positions are labelled ``-100``,
so the loss falls on the correction tokens alone.

CLI: ``python -m training.sft --config training/configs/corrector.yaml [--field value ...]``.
"""

from __future__ import annotations

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

from aligner_proxy.core.corrector import CorrectionInput, CorrectionPrompter
from aligner_proxy.core.files import read_jsonl_models
from aligner_proxy.core.prompt import PromptRenderError
from training.args import ATTENTION_MODULES, MLP_MODULES, ModelArguments, peft_config, shared_help
from training.data.records import CorrectionTriple
from training.trainers import (
    attach_loss_logger,
    latest_checkpoint,
    parse_config,
    resolve_with_tokenizer,
    trainer_args,
)

logger = logging.getLogger(__name__)


@dataclass
class CorrectorSFTConfig(ModelArguments):
    """Everything a corrector SFT run needs; the YAML config and the CLI flags map onto these fields."""

    lora_target_modules: list[str] = field(
        default_factory=lambda: [*ATTENTION_MODULES, *MLP_MODULES], metadata=shared_help("lora_target_modules")
    )
    train_file: str = field(default="runs/corpus/train.jsonl", metadata={"help": "CorrectionTriple JSONL."})
    validation_file: str | None = field(
        default="runs/corpus/validation.jsonl", metadata={"help": "CorrectionTriple JSONL for eval loss. Empty: none."}
    )
    output_dir: str = field(default="runs/corrector", metadata={"help": "Final adapter/model, tokenizer and card."})
    save_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "dtype of the saved LoRA weights (bfloat16 halves the adapter)."}
    )
    max_length: int = field(default=384, metadata={"help": "Tokens per row (prompt + correction), cut at the end."})
    max_question_tokens: int = field(default=128, metadata={"help": "Question budget in the prompt (tail kept)."})
    max_answer_tokens: int = field(default=160, metadata={"help": "Answer budget in the prompt (head kept)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Rows per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "LR warm-up share of all steps (then cosine decay)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    identity_warmup_steps: int | None = field(
        default=None, metadata={"help": "Optimiser steps on identity (Q-A-A) rows first; None: use the fraction."}
    )
    identity_warmup_fraction: float = field(
        default=0.1, metadata={"help": "Identity warm-up steps as a fraction of the main phase's steps."}
    )
    warmup_kinds: list[str] = field(
        default_factory=lambda: ["identity"], metadata={"help": "Triple kinds drawn for the warm-up phase."}
    )
    main_kinds: list[str] = field(
        default_factory=lambda: ["unsafe_to_safe", "identity", "upstream"],
        metadata={"help": "Triple kinds in the main Q-A-C phase."},
    )
    group_by_length: bool = field(
        default=False,
        metadata={"help": "Within each phase, batch rows of similar length (less padding, same rows per phase)."},
    )
    max_steps: int = field(default=-1, metadata={"help": "Main-phase optimiser steps; > 0 overrides epochs."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Main-phase epochs over the training triples."})
    max_train_items: int | None = field(default=None, metadata={"help": "Cap on training triples (after shuffle)."})
    max_eval_items: int | None = field(default=64, metadata={"help": "Cap on validation triples."})
    eval_steps: int | None = field(default=None, metadata={"help": "Eval loss every this many steps; None: at end."})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (CPUs with AVX512-BF16/AMX, GPUs)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    seed: int = field(default=42, metadata={"help": "Seed for shuffling, LoRA init and dropout."})
    logging_steps: int = field(default=5, metadata={"help": "Log loss every this many steps."})
    save_steps: int = field(default=25, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    resume: bool = field(default=True, metadata={"help": "Resume from the newest checkpoint under output_dir."})


def prompter(config: CorrectorSFTConfig, tokenizer: Any) -> CorrectionPrompter:
    """The proxy's prompt builder on ``tokenizer`` with the run's budgets: rows without loading the model."""
    from aligner_proxy.core.backends.tokenizer import HFTokenizer

    return CorrectionPrompter(
        HFTokenizer(tokenizer),
        max_question_tokens=config.max_question_tokens,
        max_answer_tokens=config.max_answer_tokens,
    )


# --------------------------------------------------------------------------- data


def to_rows(triples: Sequence[CorrectionTriple], prompts: CorrectionPrompter) -> list[dict[str, str]]:
    """TRL prompt-completion rows: the proxy's exact Aligner prompt, then ``" " + correction`` (EOS added by TRL).

    A triple whose prompt the renderer refuses (:class:`PromptRenderError`: the
    proxy would refuse it too) is skipped with a warning.
    """
    rows = []
    for t in triples:
        try:
            prompt = prompts.build_prompt(CorrectionInput(t.question, t.answer))
        except PromptRenderError as error:
            logger.warning("skipping a %s triple from %s: %s", t.kind, t.source, error)
            continue
        rows.append({"prompt": prompt, "completion": " " + t.correction.strip()})
    return rows


def _cycle(items: Sequence[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` items: whole shuffled passes over ``items``, the last one partial."""
    out: list[Any] = []
    while len(out) < n and items:
        out.extend(rng.sample(list(items), len(items)))
    return out[:n]


def _group_by_length(
    rows: list[dict[str, str]], batch: int, rng: random.Random, window: int = 16
) -> list[dict[str, str]]:
    """Sort each window of ``window`` micro-batches by length and shuffle the resulting batches.

    Padding on CPU is paid in full; this keeps the mix of a phase and its
    order of magnitude of randomness while cutting most of the padding.
    """
    out: list[dict[str, str]] = []
    for start in range(0, len(rows), batch * window):
        chunk = sorted(rows[start : start + batch * window], key=lambda r: len(r["prompt"]) + len(r["completion"]))
        batches = [chunk[k : k + batch] for k in range(0, len(chunk), batch)]
        rng.shuffle(batches)
        out.extend(row for b in batches for row in b)
    return out


@dataclass
class Curriculum:
    """The training rows in the order they are read: warm-up rows, then main rows."""

    rows: list[dict[str, str]]
    warmup_steps: int
    main_steps: int
    sources: dict[str, int]


def build_curriculum(
    config: CorrectorSFTConfig, triples: list[CorrectionTriple], prompts: CorrectionPrompter
) -> Curriculum:
    rng = random.Random(config.seed)
    triples = rng.sample(triples, len(triples))
    if config.max_train_items is not None:
        triples = triples[: config.max_train_items]
    main = [t for t in triples if t.kind in config.main_kinds]
    warm = [t for t in triples if t.kind in config.warmup_kinds]
    if not warm:  # Q-A-A from the corrections themselves: a good answer maps to itself
        warm = [t.model_copy(update={"answer": t.correction, "kind": "identity"}) for t in main]
    if not main:
        raise ValueError(f"no training triples of kinds {config.main_kinds} in {config.train_file}")
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if config.max_steps > 0:
        main_steps = config.max_steps
    else:
        main_steps = math.ceil(config.num_train_epochs * len(main) / batch)
    warm_steps = (
        config.identity_warmup_steps
        if config.identity_warmup_steps is not None
        else round(config.identity_warmup_fraction * main_steps)
    )
    chosen_warm = _cycle(warm, warm_steps * batch, rng)
    chosen_main = _cycle(main, main_steps * batch, rng)
    sources = Counter(t.source for t in chosen_warm + chosen_main)
    warm_rows, main_rows = to_rows(chosen_warm, prompts), to_rows(chosen_main, prompts)
    if config.group_by_length:
        warm_rows = _group_by_length(warm_rows, config.per_device_train_batch_size, rng)
        main_rows = _group_by_length(main_rows, config.per_device_train_batch_size, rng)
    rows = warm_rows + main_rows
    logger.info(
        "curriculum: %d warm-up steps (%d identity rows), %d main steps (%d rows of %d triples)",
        warm_steps,
        len(chosen_warm),
        main_steps,
        len(chosen_main),
        len(main),
    )
    return Curriculum(rows=rows, warmup_steps=warm_steps, main_steps=main_steps, sources=dict(sources))


# --------------------------------------------------------------------------- training


def build_trainer(config: CorrectorSFTConfig) -> tuple[Any, Curriculum]:
    """The configured ``SFTTrainer`` (data prepared, LoRA applied) and its curriculum; nothing trained yet."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    path, tokenizer = resolve_with_tokenizer(config.model, Path(config.cache_dir))
    prompts = prompter(config, tokenizer)
    curriculum = build_curriculum(config, read_jsonl_models(config.train_file, CorrectionTriple), prompts)
    eval_rows = None
    if config.validation_file:
        validation = read_jsonl_models(config.validation_file, CorrectionTriple)
        validation = random.Random(config.seed).sample(validation, len(validation))[: config.max_eval_items]
        eval_rows = to_rows(validation, prompts) or None

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = Path(config.output_dir)
    args = SFTConfig(
        **trainer_args(
            config,
            out / "checkpoints",
            max_steps=curriculum.warmup_steps + curriculum.main_steps,
            per_device_eval_batch_size=config.per_device_train_batch_size,
            weight_decay=config.weight_decay,
            lr_scheduler_type=config.lr_scheduler_type,
            train_sampling_strategy="sequential",  # the curriculum order is the training order
            max_length=config.max_length,
            completion_only_loss=True,
            packing=False,
            save_total_limit=config.save_total_limit,
            eval_strategy="steps" if eval_rows and config.eval_steps else "no",
            eval_steps=config.eval_steps,
            bf16=config.bf16,
            gradient_checkpointing=config.gradient_checkpointing,
        )
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(curriculum.rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config(config, "CAUSAL_LM"),
    )
    attach_loss_logger(trainer)
    return trainer, curriculum


def train_corrector(config: CorrectorSFTConfig) -> Path:
    """Run warm-up then Q-A-C SFT; save the adapter (or model) with its tokenizer and a card in ``output_dir``.

    Resumes from the newest checkpoint under ``output_dir/checkpoints`` when
    ``config.resume`` is set. Returns ``output_dir``. Under ``accelerate launch`` every
    process trains its share and the main process alone writes the card and metrics.
    """
    from training.cards import TrainingCost, write_model_card

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer, curriculum = build_trainer(config)
    resume = latest_checkpoint(out / "checkpoints") if config.resume else None
    if resume:
        logger.info("resuming from %s", resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - started
    metrics: dict[str, float] = {"train_loss": float(result.training_loss), "steps": float(result.global_step)}
    if trainer.eval_dataset is not None:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)})
    trainer.save_model(str(out))  # every process: FSDP / ZeRO-3 gather the weights here
    if not trainer.is_world_process_zero():  # under accelerate launch, one process writes the rest
        return out
    _cast_adapter(out, config.save_dtype)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(
        out,
        title="aligner-proxy corrector (Aligner SFT)",
        base_model=config.model + (" + LoRA" if config.use_lora else " (full fine-tune)"),
        sources=curriculum.sources,
        recipe=asdict(config),
        cost=TrainingCost.measure(wall_seconds=wall, steps=int(result.global_step)),
        metrics={"training": metrics},
    )
    logger.info("corrector written to %s: %s", out, metrics)
    return out


def _cast_adapter(out: Path, dtype: str) -> None:
    """Rewrite ``adapter_model.safetensors`` in ``dtype`` (peft saves float32)."""
    adapter = out / "adapter_model.safetensors"
    if dtype == "float32" or not adapter.is_file():
        return
    from safetensors.torch import load_file, save_file

    from aligner_proxy.core.models import torch_dtype

    state = load_file(str(adapter))
    save_file({k: v.to(torch_dtype(dtype)) for k, v in state.items()}, str(adapter), metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_corrector(parse_config(CorrectorSFTConfig, argv))


if __name__ == "__main__":
    main()
